#!/usr/bin/env python
"""Write the WCFS test databases.

usage: gen.py OUTDIR [--seed N] [--deep-keys N]

Writes into OUTDIR (deterministic in content from the seed; tids follow the
clock):

main.fs     ZBigFiles written through the real ZODB/BTrees over dozens of
            transactions: an empty file, a small file whose blktab stays a
            single inline bucket (ZBlk0, legacy ZBlk and ZBlk1 blocks, short
            blocks, holes, shared and moved ZBlks), a file of ZBlk1 blocks
            whose chunk tables span several buckets, a wide file whose blktab
            grows to many buckets and shrinks again, a file created and then
            undone (its objects become deleted), and transactions undone later
            (records pointing back to older data).
deep.fs     one ZBigFile whose blktab is a BTree of ≥ 3 levels (tens of
            thousands of tiny blocks sharing a few ZBlk0s), then
            modifications, a punched range and a truncation.
crafted.fs  ZBigFiles whose records are pickled by hand, in the forms Python 2
            wrote: protocols 0/1/2 with `str` byte strings, Python 3's own
            protocol 2 (`_codecs.encode`), protocol 3; class descriptions and
            references in ZODB's several forms; a block number beyond 2**32.
corrupt.fs  records that must be refused, and corrupt.expect listing them:
            lines `FILEOID BLK|- KIND WORD` — loading the file and its size
            (BLK '-') or the block must fail with an error of KIND (corrupt |
            class | any) whose message contains WORD ('-' for none); KIND
            'size': must succeed with size WORD; `good FILEOID BLK PREFIX`:
            the block loads and starts with PREFIX.

oracle.py reads main/deep/crafted back; corrupt.fs is for negative tests only.
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import py2compat  # noqa: E402

py2compat.install()

import transaction  # noqa: E402
import ZODB  # noqa: E402
from BTrees.IOBTree import IOBTree, IOBucket  # noqa: E402
from BTrees.LOBTree import LOBTree, LOBucket  # noqa: E402
from BTrees.OOBTree import OOBTree  # noqa: E402
from persistent.mapping import PersistentMapping  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import u64  # noqa: E402

from crafted import LowLevelWriter, Ref, record  # noqa: E402
from wendelin.bigfile.file_zodb import (  # noqa: E402
    BlockCorrupt, ZBigFile, ZBlk, ZBlk0, ZBlk1, ZData)


def randdata(rng, n, zero_runs=True):
    """n bytes of random data, sometimes with runs of zeros inside and a
    zero tail (which ZBlk0/ZData strip)."""
    b = bytearray(rng.randbytes(n))
    if zero_runs and n > 4 and rng.random() < 0.5:
        for _ in range(rng.randrange(1, 4)):
            a = rng.randrange(n)
            e = min(n, a + rng.randrange(1, max(2, n // 3)))
            b[a:e] = bytes(e - a)
    return bytes(b)


def commit(note):
    txn = transaction.get()
    txn.note(note)
    txn.commit()


def undo(db, note, undo_note):
    """Undo the transaction whose description is `note`."""
    for info in db.undoLog(0, 1000):
        desc = info['description']
        if isinstance(desc, bytes):
            desc = desc.decode()
        if desc == note:
            db.undo(info['id'])
            commit(undo_note)
            return
    raise RuntimeError('no transaction %r to undo' % note)


def tree_depth(tree):
    """Levels of a BTree from its state: 1 = inline bucket / empty."""
    depth = 1
    node = tree
    while True:
        node._p_activate()
        st = node.__getstate__()
        if st is None or len(st) == 1:
            return depth
        child = st[0][0]
        if isinstance(child, (LOBucket, IOBucket)):
            return depth + 1
        depth += 1
        node = child


# --- main.fs ---------------------------------------------------------------

def gen_main(path, rng, ntxn=40):
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()

    root['empty'] = ZBigFile(64)
    root['small'] = ZBigFile(64)
    root['chunky'] = ZBigFile(1024)
    root['wide'] = ZBigFile(16)
    commit('create files')

    small, chunky, wide = root['small'], root['chunky'], root['wide']

    def op_small():
        bt = small.blktab
        r = rng.random()
        if r < 0.55:
            blk = rng.randrange(24)
            kind = rng.choice(['zblk0', 'zblk0', 'zblk', 'zblk1'])
            small.setblk(blk, randdata(rng, rng.randrange(0, 65)), kind=kind,
                         chunksize=rng.choice([8, 16, 64]))
        elif r < 0.7:
            small.punch(rng.randrange(24))
        elif r < 0.8 and len(bt):
            # share: two blocks pointing at one ZBlk
            src = rng.choice(list(bt.keys()))
            bt[rng.randrange(24)] = bt[src]
        elif r < 0.9 and len(bt):
            # move a ZBlk to another block
            src = rng.choice(list(bt.keys()))
            z = bt[src]
            del bt[src]
            bt[rng.randrange(24)] = z
        else:
            small.truncate(rng.randrange(4, 24))

    def op_chunky():
        blk = rng.randrange(6)
        r = rng.random()
        if r < 0.7:
            n = rng.choice([1024, 1024, rng.randrange(1, 1024)])
            # mostly nonzero data so the chunk table needs several buckets
            data = bytearray(rng.randbytes(n))
            if rng.random() < 0.5:
                a = rng.randrange(n)
                e = min(n, a + rng.randrange(1, 200))
                data[a:e] = bytes(e - a)
            chunky.setblk(blk, bytes(data), kind='zblk1', chunksize=rng.choice([8, 8, 16]))
        elif r < 0.85:
            chunky.setblk(blk, randdata(rng, rng.randrange(1, 1025)), kind='zblk0')
        else:
            chunky.punch(blk)

    def op_wide():
        bt = wide.blktab
        r = rng.random()
        n = (bt.maxKey() + 1) if len(bt) else 0
        if r < 0.45:
            # grow: append a run of blocks
            for blk in range(n, n + rng.randrange(20, 120)):
                bt[blk] = ZBlk0(randdata(rng, rng.randrange(1, 17), zero_runs=False))
        elif r < 0.65 and n:
            a = rng.randrange(n)
            for blk in range(a, min(n, a + rng.randrange(5, 80))):
                wide.punch(blk)
        elif r < 0.8 and n:
            wide.truncate(rng.randrange(n // 2, n) if n > 1 else 0)
        else:
            for _ in range(rng.randrange(1, 10)):
                wide.setblk(rng.randrange(n + 30), randdata(rng, rng.randrange(0, 17)))

    ops = [op_small, op_chunky, op_wide]
    chunky_undo_pending = None
    for i in range(ntxn):
        if i == 10:
            small.setblk(30, randdata(rng, 40))      # new ZBlk, grows the file
            small.setblk(1, randdata(rng, 64))
            commit('to undo soon')
            undo(db, 'to undo soon', 'undo last')
            continue
        if i == 20:
            d = root['doomed'] = ZBigFile(32)
            for blk in range(5):
                d.setblk(blk, randdata(rng, 32), kind=rng.choice(['zblk0', 'zblk1']), chunksize=8)
            commit('create doomed')
            undo(db, 'create doomed', 'undo create doomed')
            continue
        if i == 25:
            for blk in range(3):
                chunky.setblk(blk, randdata(rng, 1024), kind=rng.choice(['zblk0', 'zblk1']), chunksize=8)
            commit('chunky to undo later')
            chunky_undo_pending = 'chunky to undo later'
            continue
        if i == 32 and chunky_undo_pending:
            undo(db, chunky_undo_pending, 'undo chunky (older txn)')
            continue
        choices = [op for op in ops if not (25 < i < 32 and op is op_chunky)]
        for _ in range(rng.randrange(1, 4)):
            op = rng.choice(choices)
            for _ in range(rng.randrange(1, 6)):
                op()
        commit('txn %d' % i)

    # make sure the last revision has a ZBlk1 whose chunk table spans buckets
    chunky.setblk(5, rng.randbytes(1023) + b'\x01', kind='zblk1', chunksize=8)
    commit('chunky: full zblk1')

    assert tree_depth(wide.blktab) >= 2, 'wide blktab did not grow past one bucket'
    assert tree_depth(small.blktab) == 1
    ok = False
    for blk, z in chunky.blktab.items():
        if isinstance(z, ZBlk1) and tree_depth(z.chunktab) >= 2:
            ok = True
    assert ok, 'no ZBlk1 with a multi-bucket chunk table'
    conn.close()
    db.close()


# --- deep.fs ---------------------------------------------------------------

def gen_deep(path, rng, nkeys):
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    f = root['deep'] = ZBigFile(16)
    pool = [ZBlk0(randdata(rng, rng.randrange(1, 17), zero_runs=False)) for _ in range(40)]
    bt = f.blktab
    for k in range(nkeys):
        bt[k] = pool[rng.randrange(len(pool))]
    commit('deep: create')
    depth = tree_depth(bt)
    assert depth >= 3, 'blktab has %d levels, want ≥ 3' % depth

    for z in rng.sample(pool, 5):
        z.setblkdata(randdata(rng, 16))
    for _ in range(100):
        bt[rng.randrange(nkeys)] = ZBlk0(randdata(rng, rng.randrange(1, 17)))
    commit('deep: modify')

    a = rng.randrange(nkeys // 4, nkeys // 2)
    for k in range(a, a + 3000):
        del bt[k]
    f.truncate(nkeys - 500)
    commit('deep: punch + truncate')

    for k in range(a + 100, a + 200):
        bt[k] = pool[0]
    bt[nkeys + 1000] = ZBlk0(b'tail')
    commit('deep: refill + grow')
    conn.close()
    db.close()


# --- crafted.fs ------------------------------------------------------------

VARIANTS = [
    # name,   protocol, py2str, classform,    refform
    ('p1py2', 1, True, 'class', 'tuple'),
    ('p2py2', 2, True, 'class_none', 'tuple'),
    ('p2py3', 2, False, 'name_none', 'oid'),
    ('p3', 3, False, 'class', 'tuple'),
]


def gen_crafted(path, rng):
    db = ZODB.DB(FileStorage(path))      # creates the root object
    db.close()
    st = FileStorage(path)
    w = LowLevelWriter(st)
    files = []
    blksize = 512
    for vi, (name, proto, py2str, classform, refform) in enumerate(VARIANTS):
        def rec(cls, state, proto=proto):
            return record(cls, state, protocol=proto, py2str=py2str, classform=classform)

        def ref(oid, cls):
            return Ref(oid, cls, refform)

        recs = {}
        foid, tree, b0, b1, b3, b4, b5 = (w.new_oid() for _ in range(7))
        ctree, d0, d1 = (w.new_oid() for _ in range(3))
        data0 = rng.randbytes(300) + b'\x01'                        # BINSTRING, non-ASCII
        data1 = bytes(rng.choice(b'abcdefgh \n\'\\') for _ in range(100))  # ASCII → str in py3 ZODB
        recs[b0] = rec(ZBlk0, data0)
        recs[b1] = rec(ZBlk, data1)                                  # legacy class name
        recs[d0] = rec(ZData, rng.randbytes(100) + b'\x07')
        recs[d1] = rec(ZData, rng.randbytes(50) + b'\x07')
        recs[ctree] = rec(IOBTree, ((((0, ref(d0, ZData), 200, ref(d1, ZData)),),),))
        recs[b3] = rec(ZBlk1, ref(ctree, IOBTree))
        recs[b4] = rec(ZBlk0, b'')                                   # empty bytes
        if py2str:
            recs[b5] = record(ZBlk0, data1[:40] + b'\xff\x00\x01', protocol=0, py2str=True,
                              classform='class')                   # protocol 0, STRING
        else:
            recs[b5] = rec(ZBlk0, rng.randbytes(10))
        items = (0, ref(b0, ZBlk0), 1, ref(b1, ZBlk), 3, ref(b3, ZBlk1), 4, ref(b4, ZBlk0),
                 5, ref(b5, ZBlk0))
        if vi == 0:
            items += (2**33 + 5, ref(b0, ZBlk0))                   # far block: LONG at protocol 1
        if name == 'p2py2':
            # non-inline blktab: two buckets as records of their own
            bk1, bk2 = w.new_oid(), w.new_oid()
            recs[bk2] = rec(LOBucket, (items[4:],))
            recs[bk1] = rec(LOBucket, (items[:4], ref(bk2, LOBucket)))
            recs[tree] = rec(LOBTree, ((ref(bk1, LOBucket), 3, ref(bk2, LOBucket)), ref(bk1, LOBucket)))
        else:
            recs[tree] = rec(LOBTree, ((((items),),),))
        recs[foid] = rec(ZBigFile, (blksize, ref(tree, LOBTree)))
        w.commit(recs, 'crafted %s: create' % name)
        files.append((name, foid, tree, b0, rec, ref, items))

    # a second revision for each: change data of blk0, punch blk1
    for name, foid, tree, b0, rec, ref, items in files:
        recs = {b0: rec(ZBlk0, rng.randbytes(200))}
        if name != 'p2py2':
            items2 = items[:2] + items[4:]
            recs[tree] = rec(LOBTree, ((((items2),),),))
        w.commit(recs, 'crafted %s: modify' % name)
    st.close()
    check_loads(path)


def check_loads(path):
    """Every ZBigFile in the database loads in Python's ZODB."""
    from oracle import find_zbigfiles
    st = FileStorage(path, read_only=True)
    db = ZODB.DB(st)
    conn = db.open()
    for oid in find_zbigfiles(st):
        f = conn.get(oid)
        n = f.size() // f.blksize
        for blk in sorted(set(f.blktab.keys()) | {0, n}):
            f.readblk(blk)
    conn.close()
    db.close()


# --- corrupt.fs ------------------------------------------------------------

def gen_corrupt(path, rng):
    db = ZODB.DB(FileStorage(path))
    db.close()
    st = FileStorage(path)
    w = LowLevelWriter(st)
    rec = record
    recs = {}
    expect = []

    def oid():
        return w.new_oid()

    def hx(o):
        return '%016x' % u64(o)

    # file X: blocks corrupt in several ways
    fx, tx = oid(), oid()
    items = []
    blk = 0

    def zblk1(chunks):
        t = oid()
        citems = []
        for off, data in chunks:
            d = oid()
            recs[d] = rec(ZData, data)
            citems += [off, Ref(d, ZData)]
        recs[t] = rec(IOBTree, ((((tuple(citems)),),),))
        z = oid()
        recs[z] = rec(ZBlk1, Ref(t, IOBTree))
        return z

    # 0: overlapping chunks
    items += [0, Ref(zblk1([(0, b'a' * 10), (8, b'b' * 4)]), ZBlk1)]
    expect.append((fx, 0, 'corrupt', '-'))
    # 1: chunk running past blksize
    items += [1, Ref(zblk1([(0, b'a'), (60, b'c' * 8)]), ZBlk1)]
    expect.append((fx, 1, 'corrupt', '-'))
    # 2: ZBlk0 longer than blksize
    z = oid()
    recs[z] = rec(ZBlk0, b'x' * 70)
    items += [2, Ref(z, ZBlk0)]
    expect.append((fx, 2, 'corrupt', '-'))
    # 3: a good block, for contrast (checked to load)
    z = oid()
    recs[z] = rec(ZBlk0, b'good')
    items += [3, Ref(z, ZBlk0)]
    # 4: something that is no ZBlk at all
    z = oid()
    recs[z] = rec(PersistentMapping, {'data': {}})
    items += [4, Ref(z, PersistentMapping)]
    expect.append((fx, 4, 'class', 'persistent.mapping.PersistentMapping'))
    # 5: ZBlk1 whose chunk is a ZBlk0
    t, zz, z = oid(), oid(), oid()
    recs[zz] = rec(ZBlk0, b'chunk?')
    recs[t] = rec(IOBTree, ((((0, Ref(zz, ZBlk0)),),),))
    recs[z] = rec(ZBlk1, Ref(t, IOBTree))
    items += [5, Ref(z, ZBlk1)]
    expect.append((fx, 5, 'class', 'wendelin.bigfile.file_zodb.ZBlk0'))
    # 6: ZBlk1 whose chunk table is an OOBTree
    t, z = oid(), oid()
    recs[t] = rec(OOBTree, None)
    recs[z] = rec(ZBlk1, Ref(t, OOBTree))
    items += [6, Ref(z, ZBlk1)]
    expect.append((fx, 6, 'class', 'BTrees.OOBTree.OOBTree'))
    # 7: ZBlk0 whose state is not bytes
    z = oid()
    recs[z] = rec(ZBlk0, 12345)
    items += [7, Ref(z, ZBlk0)]
    expect.append((fx, 7, 'corrupt', '-'))
    recs[tx] = rec(LOBTree, ((((tuple(items)),),),))
    recs[fx] = rec(ZBigFile, (64, Ref(tx, LOBTree)))

    # file Y: blktab of the wrong BTree type
    fy, ty = oid(), oid()
    recs[ty] = rec(OOBTree, None)
    recs[fy] = rec(ZBigFile, (64, Ref(ty, OOBTree)))
    expect.append((fy, '-', 'class', 'BTrees.OOBTree.OOBTree'))

    # file Z: bad blksize values
    for bs in (0, -64, 'x'):
        fz, tz = oid(), oid()
        recs[tz] = rec(LOBTree, None)
        recs[fz] = rec(ZBigFile, (bs, Ref(tz, LOBTree)))
        expect.append((fz, '-', 'corrupt', '-'))

    # file W: BTree shape errors
    fw, tw, bA, bB, good = oid(), oid(), oid(), oid(), oid()
    recs[good] = rec(ZBlk0, b'w')
    g = Ref(good, ZBlk0)
    recs[bA] = rec(LOBucket, ((0, g, 3, g, 1, g),))                  # unsorted keys
    recs[bB] = rec(LOBucket, ((12, g, 5, g),))                         # 5 < separator 10
    recs[tw] = rec(LOBTree, ((Ref(bA, LOBucket), 10, Ref(bB, LOBucket)), Ref(bA, LOBucket)))
    recs[fw] = rec(ZBigFile, (16, Ref(tw, LOBTree)))
    expect.append((fw, 1, 'corrupt', '-'))
    expect.append((fw, 12, 'corrupt', '-'))

    # file V: a tree that contains itself (cycle)
    fv, tv, bv = oid(), oid(), oid()
    recs[bv] = rec(LOBucket, ((20, g),))
    recs[tv] = rec(LOBTree, ((Ref(tv, LOBTree), 10, Ref(bv, LOBucket)), Ref(bv, LOBucket)))
    recs[fv] = rec(ZBigFile, (16, Ref(tv, LOBTree)))
    expect.append((fv, 5, 'corrupt', '-'))

    # file U: key type mismatch in the blktab (str key in an LOBTree)
    fu, tu = oid(), oid()
    recs[tu] = rec(LOBTree, (((('a', g),),),))
    recs[fu] = rec(ZBigFile, (16, Ref(tu, LOBTree)))
    expect.append((fu, 0, 'corrupt', '-'))

    # file T: wrong arities — tree children of even length, odd bucket items,
    # bucket state of 3
    for tstate in [((Ref(bA, LOBucket), 10), Ref(bA, LOBucket)),
                   ((((0, g, 1),),),),
                   (((((0, g),), None, None),),),
                   ((Ref(bA, LOBucket), 10, Ref(bB, LOBucket)), Ref(bA, LOBucket), None)]:
        ft, tt = oid(), oid()
        recs[tt] = rec(LOBTree, tstate)
        recs[ft] = rec(ZBigFile, (16, Ref(tt, LOBTree)))
        expect.append((ft, 0, 'corrupt', '-'))

    # file E: an empty bucket at the right edge (BTrees never leaves one —
    # its C code asserts — but the size must still come out right)
    fe, te, b1, b2 = oid(), oid(), oid(), oid()
    recs[b2] = rec(LOBucket, ((),))
    recs[b1] = rec(LOBucket, ((1, g, 2, g), Ref(b2, LOBucket)))
    recs[te] = rec(LOBTree, ((Ref(b1, LOBucket), 10, Ref(b2, LOBucket)), Ref(b1, LOBucket)))
    recs[fe] = rec(ZBigFile, (16, Ref(te, LOBTree)))
    expect.append((fe, '-', 'size', str(3 * 16)))

    w.commit(recs, 'corrupt')
    st.close()

    # Python agrees about the blocks it can judge.
    st = FileStorage(path, read_only=True)
    db = ZODB.DB(st)
    conn = db.open()
    f = conn.get(fx)
    for b in (0, 1, 2):
        try:
            f.readblk(b)
        except BlockCorrupt:
            pass
        else:
            raise AssertionError('python read corrupt blk %d' % b)
    assert f.readblk(3).rstrip(b'\0') == b'good'
    conn.close()
    db.close()

    with open(os.path.join(os.path.dirname(path), 'corrupt.expect'), 'w') as out:
        out.write('# FILEOID BLK|- KIND WORD  (see gen.py)\n')
        out.write('good %s 3 %s\n' % (hx(fx), 'good'))
        # the root object: not a ZBigFile
        out.write('%s - class persistent.mapping.PersistentMapping\n' % hx(b'\0' * 8))
        for foid, b, kind, word in expect:
            out.write('%s %s %s %s\n' % (hx(foid), b, kind, word))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    ap.add_argument('outdir')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--deep-keys', type=int, default=32000)
    ap.add_argument('--only', default='main,deep,crafted,corrupt')
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    only = args.only.split(',')
    gens = {
        'main': lambda p, r: gen_main(p, r),
        'deep': lambda p, r: gen_deep(p, r, args.deep_keys),
        'crafted': gen_crafted,
        'corrupt': gen_corrupt,
    }
    for i, name in enumerate(['main', 'deep', 'crafted', 'corrupt']):
        if name not in only:
            continue
        path = os.path.join(args.outdir, name + '.fs')
        for ext in ('', '.index', '.lock', '.tmp'):
            if os.path.exists(path + ext):
                os.remove(path + ext)
        gens[name](path, random.Random(args.seed * 1000 + i))
    print('ok seed=%d' % args.seed)


if __name__ == '__main__':
    main()
