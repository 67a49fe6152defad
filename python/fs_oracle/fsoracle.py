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

  demogen BASE DELTA [--seed N] [--txns N]
      Commit N transactions through a DemoStorage over BASE/data.fs (opened
      read-only; written by gen) with its changes in DELTA/data.fs: changes
      and undone changes of base objects, new objects, undone creations.

  dump DIR OUT [--zurl ZURL]
      Write what Python reads from DIR/data.fs (read-only) — or from what
      ZURL names (zurlstor: a ZEO ClientStorage with its storage name, a
      DemoStorage...) — to OUT:
        last <tid>
        txn <tid> <status> <oid,oid,...|->
        load <oid> <at> <serial> <len> <crc>   (data found)
        load <oid> <at> none                      (no record with tid <= at)
        load <oid> <at> deleted                   (POSKeyError)
      for every oid in the file and every tid in the file (and the one
      before the first).

  writer DIR N OUT [--zeo HOST:PORT | --zurl ZURL]
      Commit N transactions, each touching a varied set of objects, and
      after each commit returned write "<tid> <oid,oid,...> <unix time>" to
      OUT (flushed). A line "done" ends the file. With --zeo, commit through
      a ZEO ClientStorage connected to that server (which serves DIR/data.fs)
      instead of opening the file; with --zurl, through what ZURL names.

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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "wcfs_testdata"))
import zurlstor  # noqa: E402

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

    history(db, conn, holder, objs, rng, ntxn, big)
    conn.close()
    db.close()


def history(db, conn, holder, objs, rng, ntxn, big):
    """ntxn transactions of varied kinds on db (objs: the objects in holder)."""
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


def demogen(base, delta, seed, ntxn):
    """ntxn transactions through a DemoStorage over BASE/data.fs (opened
    read-only) with changes in DELTA/data.fs: changes and undos of base
    objects (an undone first change in the delta leaves a deletion record
    there, which shows the base's data again), new objects, undone
    creations, empty transactions."""
    from ZODB.DemoStorage import DemoStorage
    os.makedirs(delta, exist_ok=True)
    st = DemoStorage(base=ZODB.FileStorage.FileStorage(os.path.join(base, "data.fs"),
                                                        read_only=True),
                     changes=ZODB.FileStorage.FileStorage(os.path.join(delta, "data.fs")))
    db = ZODB.DB(st)
    conn = db.open()
    holder = conn.root()["holder"]
    objs = list(holder.values())
    rng = random.Random(seed)
    # Base objects changed in the delta, then that undone: the delta's
    # only records of them are deletions, and the base's data shows again.
    # DemoStorage cannot change them any more (a store conflicts with the
    # deletion record), so they are left alone afterwards (and taken out
    # of the holder, for the writer).
    keys = sorted(holder.keys())
    revealed, objs = [holder[k] for k in keys[:3]], [holder[k] for k in keys[3:]]
    for o in revealed:
        o["v"] = payload(rng)
    commit("demo-change")
    db.undo(last_undo_id(db))
    commit("demo-undo-first-change")
    conn.sync()
    # Every other object gets a record in the delta: undoing a later change
    # goes back to it.
    for o in objs:
        o["v"] = payload(rng)
    for k in keys[:3]:
        del holder[k]  # out of reach of writers
    commit("demo-touch")
    history(db, conn, holder, objs, rng, ntxn, False)
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


def dump(d, out, zurl=None):
    if zurl:
        st = zurlstor.open_zurl(zurl, read_only=True)
    else:
        st = ZODB.FileStorage.FileStorage(os.path.join(d, "data.fs"), read_only=True)
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


def writer(d, ntxn, out, zeo=None, zurl=None):
    path = os.path.join(d, "data.fs")
    rng = random.Random(ntxn)
    if zeo:
        import ZEO.ClientStorage
        host, port = zeo.rsplit(":", 1)
        db = ZODB.DB(ZEO.ClientStorage.ClientStorage((host, int(port))))
    elif zurl:
        db = ZODB.DB(zurlstor.open_zurl(zurl))
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
            # (the iterator kept while the records are read: a DemoStorage's
            # closes its parts' files once dropped)
            it = db.storage.iterator(tid, tid)
            t = next(iter(it))
            f.write("%s %s %.6f\n" % (hx(tid), ",".join(hx(r.oid) for r in t) or "-", now))
            del it
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
    du.add_argument("--zurl")
    dg = sub.add_parser("demogen")
    dg.add_argument("base")
    dg.add_argument("delta")
    dg.add_argument("--seed", type=int, default=1)
    dg.add_argument("--txns", type=int, default=60)
    w = sub.add_parser("writer")
    w.add_argument("dir")
    w.add_argument("n", type=int)
    w.add_argument("out")
    w.add_argument("--zeo")
    w.add_argument("--zurl")
    a = ap.parse_args()
    if a.cmd == "gen":
        global TINY
        TINY = a.tiny
        gen(a.dir, a.seed, a.txns, a.big)
    elif a.cmd == "extend":
        extend(a.dir, a.n, a.keep_index)
    elif a.cmd == "dump":
        dump(a.dir, a.out, a.zurl)
    elif a.cmd == "demogen":
        demogen(a.base, a.delta, a.seed, a.txns)
    elif a.cmd == "writer":
        writer(a.dir, a.n, a.out, a.zeo, a.zurl)


if __name__ == "__main__":
    sys.exit(main())
