#!/usr/bin/env python
"""Databases for the WCFS change-tracker tests and bench (daemon/tests/zdata_*.rs,
daemon/benches/zdata_apply.rs).

usage: gen.py MODE OUT.fs [--seed N] [--ntxn N]

MODE
  random   several ZBigFiles and NTXN random commits: block writes, holes,
           ZBlk0 <-> ZBlk1 switches and partial ZBlk1 chunk changes, ZBlks
           moved and shared between blocks, truncation and growth, commits
           touching no file; one file with blksize 8 whose blktab has 3
           levels and is restructured by inserting/deleting key ranges.
  reset    a ZBigFile whose blktab is replaced and whose blksize changes.
  corrupt  records overwritten with garbage and later restored.
  bench    one file of >= 50 000 blocks, then NTXN one-block commits,
           alternately a ZBlk0 modified in place and a block entry replaced
           by a new ZBlk0.

Writes OUT.fs.info: `file NAME OIDHEX` per file, `txn TIDHEX NOTE` per
commit (in order), and for bench `blk N` (the block each commit changes).
"""

import argparse
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'wcfs_testdata'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from BTrees.LOBTree import LOBTree  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import u64, p64  # noqa: E402

from crafted import LowLevelWriter  # noqa: E402
from wendelin.bigfile.file_zodb import ZBigFile, ZBlk0, ZBlk1  # noqa: E402


class Info:
    def __init__(self, path):
        self.f = open(path + '.info', 'w')

    def file(self, name, obj):
        self.f.write('file %s %016x\n' % (name, u64(obj._p_oid)))

    def txn(self, tid, note):
        self.f.write('txn %016x %s\n' % (u64(tid), note.replace(' ', '_')))

    def line(self, s):
        self.f.write(s + '\n')


def commit(db, info, note):
    txn = transaction.get()
    txn.note(note)
    txn.commit()
    info.txn(db.lastTransaction(), note)


def rdata(rng, n):
    b = bytearray(rng.randbytes(rng.randrange(1, n + 1)))
    if rng.random() < 0.3:
        a = rng.randrange(len(b))
        b[a:] = bytes(len(b) - a)
    if not any(b):
        b[0] = 1
    return bytes(b)


def nblk(f):
    return f.blktab.maxKey() + 1 if f.blktab else 0


def gen_random(path, rng, ntxn):
    info = Info(path)
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    small = ZBigFile(64)
    chunky = ZBigFile(64)
    deep = ZBigFile(8)
    empty = ZBigFile(16)
    for i in range(20):
        small.setblk(i, rdata(rng, 64))
    for i in range(0, 80, 2):
        chunky.setblk(i, rdata(rng, 64), kind=rng.choice(['zblk0', 'zblk1']), chunksize=8)
    shared = [ZBlk0(bytes([i + 1]) * 8) for i in range(8)]
    for k in range(32000):
        deep.blktab[k] = shared[k % 8] if k % 5 else ZBlk0(rng.randbytes(8))
    root['small'], root['chunky'], root['deep'], root['empty'] = small, chunky, deep, empty
    root['counter'] = 0
    commit(db, info, 'create')
    for name in ('small', 'chunky', 'deep', 'empty'):
        info.file(name, root[name])
    files = [small, chunky, deep, empty]

    def op(f):
        n = nblk(f)
        bs = f.blksize
        keys = list(f.blktab.keys()) if f is not deep else None
        r = rng.random()
        blk = rng.randrange(0, n + 5)
        if r < 0.25:
            f.setblk(blk, rdata(rng, bs), kind=rng.choice(['zblk0', 'zblk1', 'zblk']), chunksize=8)
            return 'write'
        if r < 0.35:
            z = f.blktab.get(blk)
            if isinstance(z, ZBlk1):  # change one chunk only
                data = bytearray(f.readblk(blk))
                c = rng.randrange(bs // 8)
                data[c * 8:c * 8 + 8] = rng.randbytes(8)
                f.setblk(blk, bytes(data), kind='zblk1', chunksize=8)
                return 'zblk1-chunk'
            f.setblk(blk, rdata(rng, bs), kind='zblk1', chunksize=8)
            return 'to-zblk1'
        if r < 0.45:
            f.punch(blk)
            return 'punch'
        if r < 0.55 and (keys or f is deep) and n:
            src = rng.choice(keys) if keys else rng.randrange(n)
            if src in f.blktab:
                f.blktab[blk] = f.blktab[src]
                if rng.random() < 0.5 and src != blk:
                    del f.blktab[src]
                    return 'move'
                return 'share'
            return 'nop'
        if r < 0.62 and n:
            f.truncate(rng.randrange(max(1, n - (3000 if f is deep else 30)), n + 1))
            return 'truncate'
        if r < 0.70:
            f.setblk(n + rng.randrange(0, 40), rdata(rng, bs))
            return 'grow'
        if f is deep and r < 0.85:
            a = rng.randrange(0, n + 1)
            ln = rng.randrange(50, 3000)
            if rng.random() < 0.5:
                for k in list(f.blktab.keys(min=a, max=a + ln)):
                    del f.blktab[k]
                return 'deep-del-range'
            for k in range(a, a + ln):
                f.blktab[k] = shared[rng.randrange(8)] if rng.random() < 0.8 else ZBlk0(rng.randbytes(8))
            return 'deep-ins-range'
        if r < 0.9:
            z = f.blktab.get(blk)
            if isinstance(z, ZBlk0):  # in place, same kind
                z.setblkdata(rdata(rng, bs))
                return 'inplace'
        return 'nop'

    for t in range(ntxn):
        notes = []
        if rng.random() < 0.08:
            root['counter'] += 1
            notes.append('counter')
        else:
            for _ in range(rng.randrange(1, 4)):
                f = rng.choice(files)
                notes.append(op(f))
        if not conn._registered_objects:
            root['counter'] += 1
        commit(db, info, '%d:%s' % (t, ','.join(notes)))
    db.close()


def gen_reset(path, rng):
    info = Info(path)
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    f = ZBigFile(16)
    for i in range(100):
        f.setblk(i, rdata(rng, 16))
    root['f'] = f
    root['g'] = g = ZBigFile(16)
    g.setblk(3, b'g')
    commit(db, info, 'create')
    info.file('f', f)
    info.file('g', g)
    f.setblk(5, b'x')
    commit(db, info, 'write')
    t = LOBTree()
    t.update(f.blktab)
    f.blktab = t
    commit(db, info, 'new-blktab')
    f.setblk(7, b'y')
    g.setblk(4, b'gg')
    commit(db, info, 'write2')
    f.blksize = 32
    commit(db, info, 'blksize')
    f.setblk(200, b'z')
    commit(db, info, 'grow')
    db.close()


def gen_corrupt(path, rng):
    info = Info(path)
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    f = ZBigFile(16)
    for i in range(300):
        f.setblk(i, rdata(rng, 16))
    f.setblk(10, rdata(rng, 16), kind='zblk1', chunksize=4)
    root['f'] = f
    commit(db, info, 'create')
    info.file('f', f)
    foid = f._p_oid
    zblk5 = f.blktab[5]._p_oid
    zblk10 = f.blktab[10]
    zdata10 = zblk10.chunktab[0]._p_oid
    # the bucket holding key 150
    st = f.blktab.__getstate__()
    bucket = None
    for i in range(0, len(st[0]), 2):
        if i + 1 >= len(st[0]) or st[0][i + 1] > 150:
            bucket = st[0][i]._p_oid
            break
    info.line('bucket %016x' % u64(bucket))
    db.close()

    fs = FileStorage(path)
    w = LowLevelWriter(fs)
    good = {}
    for oid in (foid, zblk5, zdata10, bucket):
        data, serial = fs.load(oid)
        good[oid] = data
        w.serials[oid] = serial
    garbage = b'\x80\x03garbage'

    def c(recs, note):
        tid = w.commit(recs, note)
        info.txn(tid, note)

    c({zblk5: garbage, zdata10: garbage}, 'bad-zblk')
    c({bucket: garbage}, 'bad-bucket')
    c({bucket: good[bucket]}, 'fix-bucket')
    c({zblk5: good[zblk5], zdata10: good[zdata10]}, 'fix-zblk')
    c({foid: garbage}, 'bad-file')
    c({foid: good[foid]}, 'fix-file')
    fs.close()


def gen_bench(path, rng, ntxn):
    info = Info(path)
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()
    f = ZBigFile(8)
    N = 50000
    for k in range(N):
        f.blktab[k] = ZBlk0(rng.randbytes(8))
    root['f'] = f
    commit(db, info, 'create')
    info.file('f', f)
    # Blocks the small tracker tracks: every 50th.
    for t in range(ntxn):
        k = rng.randrange(0, N // 50) * 50
        info.line('blk %d' % k)
        if t % 2 == 0:
            f.blktab[k].setblkdata(rng.randbytes(8))
            commit(db, info, 'inplace')
        else:
            f.blktab[k] = ZBlk0(rng.randbytes(8))
            commit(db, info, 'replace')
    db.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('mode', choices=['random', 'reset', 'corrupt', 'bench'])
    ap.add_argument('out')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--ntxn', type=int, default=300)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    for ext in ('', '.index', '.lock', '.tmp', '.info'):
        if os.path.exists(a.out + ext):
            os.remove(a.out + ext)
    if a.mode == 'random':
        gen_random(a.out, rng, a.ntxn)
    elif a.mode == 'reset':
        gen_reset(a.out, rng)
    elif a.mode == 'corrupt':
        gen_corrupt(a.out, rng)
    else:
        gen_bench(a.out, rng, a.ntxn)


if __name__ == '__main__':
    main()
