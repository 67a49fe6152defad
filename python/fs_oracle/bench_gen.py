"""Write a big data.fs for the FileStorage open benchmark.

    bench_gen.py PATH [--txns N] [--objs-per-txn K] [--big BYTES]

Every transaction creates K small objects, modifies a few recent ones and
stores one large payload, so the file has many transactions and many
objects, not just a few huge records (defaults: 20 000 transactions,
200 000 objects, 53 KB per transaction: a bit over 1 GiB). The storage is
closed cleanly, so PATH.index is written.
"""

import argparse
import os
import random

import transaction
import ZODB
import ZODB.FileStorage
from persistent.mapping import PersistentMapping

ZODB.FileStorage.FileStorage.fsync = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--txns", type=int, default=20000)
    ap.add_argument("--objs-per-txn", type=int, default=10)
    ap.add_argument("--big", type=int, default=53000)
    a = ap.parse_args()
    tmp = a.path + ".tmp-gen"
    for p in (tmp, tmp + ".index", tmp + ".lock", tmp + ".tmp"):
        if os.path.exists(p):
            os.remove(p)
    rng = random.Random(1)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(tmp), cache_size=2000)
    conn = db.open()
    recent = []
    for n in range(a.txns):
        for _ in range(a.objs_per_txn):
            o = PersistentMapping({"v": rng.randbytes(rng.randrange(16, 200))})
            conn.add(o)
            recent.append(o)
        for o in rng.sample(recent, min(3, len(recent))):
            o["v"] = rng.randbytes(rng.randrange(16, 200))
        big = PersistentMapping({"v": os.urandom(a.big)})
        conn.add(big)
        transaction.get().note("bench %d" % n)
        transaction.commit()
        if len(recent) > 1000:
            recent = recent[-500:]
        if n % 1000 == 0:
            conn.cacheMinimize()
    conn.close()
    db.close()
    os.rename(tmp, a.path)
    os.rename(tmp + ".index", a.path + ".index")
    for p in (tmp + ".lock", tmp + ".tmp"):
        if os.path.exists(p):
            os.remove(p)


if __name__ == "__main__":
    main()
