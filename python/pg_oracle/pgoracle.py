"""Python's RelStorage as the oracle for the Rust PostgreSQL storage.

Subcommands (ZURL: a postgresql:// URI of a database; RelStorage creates
its history-preserving schema there on first use):

  init ZURL
      Open the database with RelStorage (which creates its history-preserving
      schema there) and close it.

  gen ZURL [--seed N] [--txns N] [--big]
      Commit through RelStorage what fsoracle.py's gen commits to a data.fs:
      objects with many revisions, undo of creating transactions (their
      objects get a NULL state: deleted), undo of modifications and of
      undos, empty transactions (low-level API), new objects, 2 MiB records
      with --big.

  dump ZURL OUT
      What Python reads through RelStorage (read-only), in fsoracle's
      format:
        last <tid>
        txn <tid> <status> <oid,oid,...|->
        load <oid> <at> <serial> <len> <crc>   (data found)
        load <oid> <at> none                   (no revision with tid <= at)
        load <oid> <at> deleted                (the revision is an undone creation)
        load <oid> <at> nosuch                 (POSKeyError: no such object)
      for every oid of every transaction and every tid (and the one before
      the first).

  writer ZURL N OUT [--seed S] [--sleep] [--retry]
      Commit N transactions touching varied objects of root["holder"] (made
      by gen), each followed by a line "<tid> <oid,oid,...> <unix time>" in
      OUT (flushed; the oids as RelStorage's iterator lists them); "done"
      ends the file. Several writers may run at once (conflicts are retried).
      With --retry, any error (the server restarting) is retried after a
      pause too; a commit whose outcome the error hid is then not listed.

  pack ZURL [--gc] [--at TID]
      Pack the database as of its last transaction (zodbpack --days 0), or
      as of transaction TID; prints "packed <tid>" (the tid asked for).

  histfree ZURL
      Create RelStorage's history-free schema in the database, and commit
      one transaction.

Tids and oids are 16 hex digits; crc is zlib's crc32 of the data.
"""

import argparse
import os
import random
import sys
import time
import zlib

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(here), 'fs_oracle'))
sys.path.insert(0, os.path.join(os.path.dirname(here), 'wcfs_testdata'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from persistent.mapping import PersistentMapping  # noqa: E402
from ZODB.Connection import TransactionMetaData  # noqa: E402
from ZODB.POSException import ConflictError, POSKeyError  # noqa: E402
from ZODB.utils import p64, u64  # noqa: E402

import fsoracle  # noqa: E402
from fsoracle import commit, last_undo_id, payload  # noqa: E402
from pgstorage import committed_tid, open_relstorage  # noqa: E402


def hx(b):
    return b.hex() if isinstance(b, bytes) else "%016x" % b


def gen(zurl, seed, ntxn, big):
    rng = random.Random(seed)
    db = ZODB.DB(open_relstorage(zurl))
    conn = db.open()
    root = conn.root()
    root["holder"] = holder = PersistentMapping()
    objs = []
    for i in range(20):
        o = PersistentMapping({"v": payload(rng, big)})
        holder[i] = o
        objs.append(o)
    if big:
        objs[0]["v"] = rng.randbytes(2 << 20)
    commit("init", user="oracle")

    for n in range(ntxn):
        r = rng.random()
        if r < 0.08:
            k = len(holder) + 1000
            for j in range(rng.randrange(1, 4)):
                holder[k + j] = PersistentMapping({"v": payload(rng)})
            commit("create-%d" % n)
            db.undo(last_undo_id(db))
            commit("undo-create-%d" % n)
            conn.sync()
        elif r < 0.2:
            o = rng.choice(objs)
            o["v"] = payload(rng, big)
            commit("modify-%d" % n)
            db.undo(last_undo_id(db))
            commit("undo-modify-%d" % n)
            if rng.random() < 0.5:
                db.undo(last_undo_id(db))
                commit("redo-%d" % n)
            conn.sync()
        elif r < 0.25:
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


def dump(zurl, out):
    st = open_relstorage(zurl, read_only=True)
    tids = []
    oids = set()
    with open(out, "w") as f:
        f.write("last %s\n" % hx(st.lastTransaction()))
        for t in st.iterator():
            toids = [r.oid for r in t]
            oids.update(toids)
            tids.append(u64(t.tid))
            f.write("txn %s %s %s\n" % (hx(t.tid), t.status if t.status != " " else "_",
                                        ",".join(hx(o) for o in sorted(toids)) or "-"))
        ats = ([tids[0] - 1] if tids else []) + tids
        for oid in sorted(oids):
            for at in ats:
                try:
                    r = st.loadBefore(oid, p64(at + 1))
                except POSKeyError:
                    f.write("load %s %s nosuch\n" % (hx(oid), hx(at)))
                    continue
                if r is None:
                    f.write("load %s %s none\n" % (hx(oid), hx(at)))
                    continue
                data, serial, _ = r
                if data is None:
                    f.write("load %s %s deleted\n" % (hx(oid), hx(at)))
                else:
                    f.write("load %s %s %s %d %08x\n" % (hx(oid), hx(at), hx(serial),
                                                         len(data), zlib.crc32(data)))
    st.close()


def writer(zurl, ntxn, out, seed, sleep, retry):
    rng = random.Random(seed)
    db = ZODB.DB(open_relstorage(zurl))
    conn = db.open()
    with open(out, "w") as f:
        n = 0
        while n < ntxn:
            try:
                conn.sync()
                holder = conn.root()["holder"]
                objs = list(holder.values())
                touched = rng.sample(objs, rng.randrange(1, min(8, len(objs))))
                for o in touched:
                    o["v"] = payload(rng)
                commit("writer-%d-%d" % (seed, n))
                tid = committed_tid(conn, touched[0])
                now = time.time()
                t = next(iter(db.storage.iterator(tid, tid)))
                oids = ",".join(hx(r.oid) for r in t) or "-"
            except ConflictError:
                transaction.abort()
                continue
            except Exception as e:  # noqa: BLE001 - the server went away
                if not retry:
                    raise
                try:
                    transaction.abort()
                except Exception:  # noqa: BLE001 - still away
                    pass
                print("writer %d: %s: %s (retrying)" % (seed, type(e).__name__, e),
                      file=sys.stderr)
                time.sleep(0.05)
                continue
            f.write("%s %s %.6f\n" % (hx(tid), oids, now))
            f.flush()
            n += 1
            if sleep:
                time.sleep(rng.choice([0, 0.001, 0.005, 0.02]))
        f.write("done\n")
    conn.close()
    db.close()


def pack(zurl, gc, at):
    from ZODB.serialize import referencesf
    from ZODB.TimeStamp import TimeStamp
    st = open_relstorage(zurl, pack_gc=gc)
    if at is None:
        at = st.lastTransaction()
        t = time.time() + 1
    else:
        at = p64(int(at, 16))
        # The time of that transaction (and not of the next: they are
        # milliseconds apart).
        t = TimeStamp(at).timeTime() + 1e-5
    st.pack(t, referencesf)
    print("packed %s" % hx(at))
    st.close()


def histfree(zurl):
    db = ZODB.DB(open_relstorage(zurl, keep_history=False))
    conn = db.open()
    conn.root()["x"] = PersistentMapping({"v": b"history-free"})
    transaction.commit()
    conn.close()
    db.close()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("zurl")
    g = sub.add_parser("gen")
    g.add_argument("zurl")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--txns", type=int, default=120)
    g.add_argument("--big", action="store_true")
    du = sub.add_parser("dump")
    du.add_argument("zurl")
    du.add_argument("out")
    w = sub.add_parser("writer")
    w.add_argument("zurl")
    w.add_argument("n", type=int)
    w.add_argument("out")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--sleep", action="store_true")
    w.add_argument("--retry", action="store_true")
    p = sub.add_parser("pack")
    p.add_argument("zurl")
    p.add_argument("--gc", action="store_true")
    p.add_argument("--at")
    h = sub.add_parser("histfree")
    h.add_argument("zurl")
    a = ap.parse_args()
    if a.cmd == "init":
        open_relstorage(a.zurl).close()
    elif a.cmd == "gen":
        gen(a.zurl, a.seed, a.txns, a.big)
    elif a.cmd == "dump":
        dump(a.zurl, a.out)
    elif a.cmd == "writer":
        writer(a.zurl, a.n, a.out, a.seed, a.sleep, a.retry)
    elif a.cmd == "pack":
        pack(a.zurl, a.gc, a.at)
    elif a.cmd == "histfree":
        histfree(a.zurl)


if __name__ == "__main__":
    fsoracle  # imported for its helpers
    sys.exit(main())
