"""Python ZODB as the oracle for the Rust FileStorage driver.

Subcommands (all paths are directories holding data.fs):

  gen DIR [--seed N] [--txns N] [--big] [--tiny]
      Write DIR/data.fs: objects with many revisions, undo of creating and
      of modifying transactions (so that deletion records and back-pointers
      exist), undo of an undo, and empty transactions. Close cleanly, so that
      DIR/data.fs.index exists.

  extend DIR N [--keep-index]
      Commit N more transactions to DIR/data.fs. With --keep-index, put back
      the .index file that existed before, so that it is stale.

  dump DIR OUT
      Write what Python reads from DIR/data.fs (read-only) to OUT:
        last <tid>
        txn <tid> <status> <oid,oid,...|->
        load <oid> <at> <serial> <len> <crc>   (data found)
        load <oid> <at> none                      (no record with tid <= at)
        load <oid> <at> deleted                   (POSKeyError)
      for every oid in the file and every tid in the file (and the one
      before the first).

  writer DIR N OUT [--zeo HOST:PORT]
      Commit N transactions, each touching a varied set of objects, and
      after each commit returned write "<tid> <oid,oid,...> <unix time>" to
      OUT (flushed). A line "done" ends the file. With --zeo, commit through
      a ZEO ClientStorage connected to that server (which serves DIR/data.fs)
      instead of opening the file.

Tids and oids are written as 16 hex digits; crc is zlib's crc32 of the data.
"""

import argparse
import os
import random
import shutil
import sys
import time
import zlib

import transaction
import ZODB
import ZODB.FileStorage
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, u64

# fsync on every commit only slows the generators down.
ZODB.FileStorage.FileStorage.fsync = None


def crc(b):
    return zlib.crc32(b)


def hx(b):
    return b.hex() if isinstance(b, bytes) else "%016x" % b


TINY = False


def payload(rng, big=False):
    if TINY:
        return rng.randbytes(rng.randrange(0, 24))
    r = rng.random()
    if big and r < 0.01:
        n = 2 << 20
    elif r < 0.05:
        n = rng.randrange(60000, 300000)
    elif r < 0.2:
        n = rng.randrange(1000, 10000)
    else:
        n = rng.randrange(0, 300)
    return rng.randbytes(n)


def commit(note, user=""):
    t = transaction.get()
    t.note(note)
    if user:
        t.user = user
    t.setExtendedInfo("k", note)
    transaction.commit()


def last_undo_id(db):
    return db.undoLog(0, 1)[0]["id"]


def gen(d, seed, ntxn, big):
    rng = random.Random(seed)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "data.fs")
    for suffix in ("", ".index", ".lock", ".tmp"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    conn = db.open()
    root = conn.root()
    root["holder"] = holder = PersistentMapping()
    objs = []
    for i in range(3 if TINY else 20):
        o = PersistentMapping({"v": payload(rng, big)})
        holder[i] = o
        objs.append(o)
    commit("init", user="oracle")

    for n in range(ntxn):
        r = rng.random()
        if r < 0.08:
            # create objects, then undo their creation: deletion records
            # (back-pointer 0) for them, a back-pointer for holder.
            k = len(holder) + 1000
            for j in range(rng.randrange(1, 4)):
                holder[k + j] = PersistentMapping({"v": payload(rng)})
            commit("create-%d" % n)
            db.undo(last_undo_id(db))
            commit("undo-create-%d" % n)
            conn.sync()
        elif r < 0.2:
            # modify, then undo the modification: back-pointers to older data
            o = rng.choice(objs)
            o["v"] = payload(rng, big)
            commit("modify-%d" % n)
            uid = last_undo_id(db)
            db.undo(uid)
            commit("undo-modify-%d" % n)
            if rng.random() < 0.5:
                # undo the undo: a back-pointer chain
                db.undo(last_undo_id(db))
                commit("redo-%d" % n)
            conn.sync()
        elif r < 0.25:
            # a transaction with no records: only the low-level API writes one
            st = db.storage
            t = TransactionMetaData(description=b"empty-%d" % n)
            st.tpc_begin(t)
            st.tpc_vote(t)
            st.tpc_finish(t)
            conn.sync()
        elif r < 0.35:
            o = PersistentMapping({"v": payload(rng, big)})
            holder[len(holder) + 100000] = o
            objs.append(o)
            commit("new-%d" % n)
        else:
            for o in rng.sample(objs, rng.randrange(1, min(6, len(objs)))):
                o["v"] = payload(rng, big)
            commit("mod-%d" % n, user="u%d" % (n % 3))
    conn.close()
    db.close()


def extend(d, ntxn, keep_index):
    path = os.path.join(d, "data.fs")
    saved = None
    if keep_index:
        with open(path + ".index", "rb") as f:
            saved = f.read()
    rng = random.Random(ntxn)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    conn = db.open()
    holder = conn.root()["holder"]
    objs = [v for v in holder.values()]
    for n in range(ntxn):
        for o in rng.sample(objs, 2):
            o["v"] = payload(rng)
        if n % 3 == 0:
            holder[len(holder) + 200000] = PersistentMapping({"v": b"x%d" % n})
        commit("extend-%d" % n)
    conn.close()
    db.close()
    if saved is not None:
        with open(path + ".index", "wb") as f:
            f.write(saved)


def dump(d, out):
    path = os.path.join(d, "data.fs")
    st = ZODB.FileStorage.FileStorage(path, read_only=True)
    tids = []
    oids = set()
    with open(out, "w") as f:
        f.write("last %s\n" % hx(st.lastTransaction()))
        for t in st.iterator():
            toids = [r.oid for r in t]
            oids.update(toids)
            tids.append(u64(t.tid))
            f.write("txn %s %s %s\n" % (hx(t.tid), t.status if t.status != " " else "_",
                                        ",".join(hx(o) for o in toids) or "-"))
        ats = ([tids[0] - 1] if tids else []) + tids
        for oid in sorted(oids):
            for at in ats:
                try:
                    r = st.loadBefore(oid, p64(at + 1))
                except POSKeyError:
                    f.write("load %s %s deleted\n" % (hx(oid), hx(at)))
                    continue
                if r is None:
                    f.write("load %s %s none\n" % (hx(oid), hx(at)))
                else:
                    data, serial, _ = r
                    f.write("load %s %s %s %d %08x\n" % (hx(oid), hx(at), hx(serial),
                                                         len(data), crc(data)))
    st.close()


def writer(d, ntxn, out, zeo=None):
    path = os.path.join(d, "data.fs")
    rng = random.Random(ntxn)
    if zeo:
        import ZEO.ClientStorage
        host, port = zeo.rsplit(":", 1)
        db = ZODB.DB(ZEO.ClientStorage.ClientStorage((host, int(port))))
    else:
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    conn = db.open()
    holder = conn.root()["holder"]
    objs = list(holder.values())
    with open(out, "w") as f:
        for n in range(ntxn):
            touched = rng.sample(objs, rng.randrange(1, min(8, len(objs))))
            for o in touched:
                o["v"] = payload(rng)
            if n % 10 == 0:
                o = PersistentMapping({"v": b"w%d" % n})
                holder[len(holder) + 300000] = o
                objs.append(o)
            commit("writer-%d" % n)
            tid = db.storage.lastTransaction()
            now = time.time()
            # the oids of the transaction, in record order
            t = next(iter(db.storage.iterator(tid, tid)))
            f.write("%s %s %.6f\n" % (hx(tid), ",".join(hx(r.oid) for r in t) or "-", now))
            f.flush()
            time.sleep(rng.choice([0, 0.001, 0.005, 0.02]))
        f.write("done\n")
    conn.close()
    db.close()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--txns", type=int, default=120)
    g.add_argument("--big", action="store_true")
    g.add_argument("--tiny", action="store_true", help="few small objects (fuzz seeds)")
    e = sub.add_parser("extend")
    e.add_argument("dir")
    e.add_argument("n", type=int)
    e.add_argument("--keep-index", action="store_true")
    du = sub.add_parser("dump")
    du.add_argument("dir")
    du.add_argument("out")
    w = sub.add_parser("writer")
    w.add_argument("dir")
    w.add_argument("n", type=int)
    w.add_argument("out")
    w.add_argument("--zeo")
    a = ap.parse_args()
    if a.cmd == "gen":
        global TINY
        TINY = a.tiny
        gen(a.dir, a.seed, a.txns, a.big)
    elif a.cmd == "extend":
        extend(a.dir, a.n, a.keep_index)
    elif a.cmd == "dump":
        dump(a.dir, a.out)
    elif a.cmd == "writer":
        writer(a.dir, a.n, a.out, a.zeo)


if __name__ == "__main__":
    sys.exit(main())
