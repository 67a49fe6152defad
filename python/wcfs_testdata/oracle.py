#!/usr/bin/env python
"""Print what Python's ZODB sees in every ZBigFile, at every revision.

usage: oracle.py DATA.FS [--out FILE] [--max-blocks N]

This is the reference the Rust reader is checked against. Block contents come
from the ordinary Python read path (blktab.get + the ZBlk's own decoding);
BTree paths, key ranges and serials come from walking node states
(`__getstate__()`) here, independently of the Rust code.

Output: one record per line, space-separated; ids and tids are 16 lower-case
hex digits, keys are decimal (i64); lists are comma-separated ('-' = none).

    db PATH
        start of the report for PATH.
    txn TID
        the lines up to the next `txn` describe the database as of TID (every
        transaction of the file, in order).
    nofile FOID
        a ZBigFile oid known in the file does not exist as of TID (created
        later, or its creation was undone): loading it must fail as "missing".
    fileerr FOID EXC
        Python could not load the file (EXC: exception class); not checked.
    file FOID blksize=N size=BYTES nblk=N sizemaxkey=K|- sizepath=OIDS
         sizelo=K sizehi=K sizemaxserial=TID
        the file: size = (max key of blktab + 1) * blksize (0 if empty);
        sizepath is the path root→bucket holding the max key (just the root
        when blktab is empty; an inline bucket has no oid so the path ends at
        the tree), [sizelo, sizehi] the key range that bucket covers,
        sizemaxserial the max serial of the nodes on sizepath.
    blk N sha1=HEX zblk=OID|- serial=TID|- path=OIDS lo=K hi=K maxserial=TID
        block N (every block 0..nblk, i.e. one past EOF too; for files of
        more than --max-blocks blocks: every present block, its neighbours,
        0, nblk-1 and nblk): sha1 of its blksize bytes; the ZBlk and its
        serial (- for a hole); the blktab path root→bucket for key N and the
        key range [lo, hi] of that bucket (inclusive; i64 min/max at the
        extremes, bounds come from the separating keys on the path); maxserial
        = max serial over the path nodes, the ZBlk, and for ZBlk1 every node
        of its chunk table and every ZData.
    blkerr N EXC
        Python failed to read block N (EXC: exception class): the Rust reader
        must fail too.
"""

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import py2compat  # noqa: E402

py2compat.install()

import ZODB  # noqa: E402
from BTrees.IOBTree import IOBTree, IOBucket  # noqa: E402
from BTrees.LOBTree import LOBTree, LOBucket  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.POSException import POSKeyError  # noqa: E402
from ZODB.utils import get_pickle_metadata, u64  # noqa: E402

from wendelin.bigfile.file_zodb import ZBlk1  # noqa: E402

I64_MIN = -2**63
I64_MAX = 2**63 - 1
BUCKETS = (LOBucket, IOBucket)
TREES = (LOBTree, IOBTree)


def find_zbigfiles(storage):
    """Oids of every object ever stored with class ZBigFile."""
    oids = set()
    for txn in storage.iterator():
        for r in txn:
            if not r.data:
                continue
            mod, name = get_pickle_metadata(r.data)
            if (mod, name) == ('wendelin.bigfile.file_zodb', 'ZBigFile'):
                oids.add(r.oid)
    return sorted(oids)


def hx(b):
    return '%016x' % u64(b)


class Walker:
    """BTree walks over node states; one per connection (states are fixed
    as of its tid, so they are cached)."""

    def __init__(self):
        self.states = {}

    def state(self, node):
        key = node._p_oid
        if key not in self.states:
            node._p_activate()
            self.states[key] = (node.__getstate__(), node._p_serial)
        return self.states[key]

    def split(self, node, st):
        """→ ('items', items) | ('kids', kids)"""
        if isinstance(node, BUCKETS):
            return 'items', st[0]
        if st is None:
            return 'items', ()
        if len(st) == 1:
            return 'items', st[0][0][0]
        return 'kids', st[0]

    def lookup(self, tree, key):
        """→ value, path oids, lo, hi, serials"""
        path, serials = [], []
        lo, hi = I64_MIN, I64_MAX
        node = tree
        while True:
            st, serial = self.state(node)
            path.append(node._p_oid)
            serials.append(serial)
            what, x = self.split(node, st)
            if what == 'items':
                items = x
                break
            kids = x
            i = 0
            for j in range(1, len(kids), 2):
                if kids[j] <= key:
                    i = j + 1
                else:
                    break
            if i > 0:
                lo = kids[i - 1]
            if i + 1 < len(kids):
                hi = kids[i + 1] - 1
            node = kids[i]
        value = None
        for j in range(0, len(items), 2):
            if items[j] == key:
                value = items[j + 1]
        return value, path, lo, hi, serials

    def rightmost(self, tree):
        """→ maxkey|None, path, lo, hi, serials (path to the bucket holding
        the max key; empty nodes on the way are skipped)."""
        def rec(node, lo, hi, path, serials):
            st, serial = self.state(node)
            path = path + [node._p_oid]
            serials = serials + [serial]
            what, x = self.split(node, st)
            if what == 'items':
                if not x:
                    return None
                return x[-2], path, lo, hi, serials
            kids = x
            for i in range(len(kids) - 1, -1, -2):
                clo = kids[i - 1] if i > 0 else lo
                chi = kids[i + 1] - 1 if i + 1 < len(kids) else hi
                r = rec(kids[i], clo, chi, path, serials)
                if r is not None:
                    return r
            return None

        r = rec(tree, I64_MIN, I64_MAX, [], [])
        if r is None:
            _, serial = self.state(tree)
            return None, [tree._p_oid], I64_MIN, I64_MAX, [serial]
        return r

    def all_nodes(self, tree):
        """Every node of a BTree (tree nodes and buckets), with serials."""
        out = []
        stack = [tree]
        while stack:
            node = stack.pop()
            st, serial = self.state(node)
            out.append((node, serial))
            what, x = self.split(node, st)
            if what == 'kids':
                stack.extend(x[0::2])
        return out


def report_file(out, w, f, foid, max_blocks):
    bs = f.blksize
    size = f.size()
    nblk = size // bs
    maxkey, spath, slo, shi, sserials = w.rightmost(f.blktab)
    pymax = f.blktab.maxKey() if len(f.blktab) else None
    assert maxkey == pymax, (maxkey, pymax)
    out.write('file %s blksize=%d size=%d nblk=%d sizemaxkey=%s sizepath=%s sizelo=%d sizehi=%d sizemaxserial=%s\n' % (
        hx(foid), bs, size, nblk, '-' if maxkey is None else maxkey,
        ','.join(hx(o) for o in spath), slo, shi, hx(max(sserials))))

    if nblk <= max_blocks:
        blocks = range(nblk + 1)
    else:
        keys = set(f.blktab.keys())
        near = {k + d for k in keys for d in (-1, 1)}
        blocks = sorted(b for b in keys | near | {0, nblk - 1, nblk} if 0 <= b <= nblk)

    for blk in blocks:
        try:
            data = f.readblk(blk)
            assert len(data) == bs
            zblk = f.blktab.get(blk)
            value, path, lo, hi, serials = w.lookup(f.blktab, blk)
            assert value is zblk, (blk, value, zblk)
            maxserial = max(serials)
            if zblk is not None:
                st, zserial = w.state(zblk)
                maxserial = max(maxserial, zserial)
                if isinstance(zblk, ZBlk1):
                    for node, s in w.all_nodes(zblk.chunktab):
                        maxserial = max(maxserial, s)
                    for chunk in zblk.chunktab.values():
                        maxserial = max(maxserial, w.state(chunk)[1])
        except Exception as e:  # noqa: BLE001 - reported, Rust must fail too
            out.write('blkerr %d %s\n' % (blk, type(e).__name__))
            continue
        out.write('blk %d sha1=%s zblk=%s serial=%s path=%s lo=%d hi=%d maxserial=%s\n' % (
            blk, hashlib.sha1(data).hexdigest(),
            '-' if zblk is None else hx(zblk._p_oid),
            '-' if zblk is None else hx(zserial),
            ','.join(hx(o) for o in path), lo, hi, hx(maxserial)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('datafs')
    ap.add_argument('--out', default='-')
    ap.add_argument('--max-blocks', type=int, default=100000)
    args = ap.parse_args()

    st = FileStorage(args.datafs, read_only=True)
    db = ZODB.DB(st)
    tids = [t.tid for t in st.iterator()]
    foids = find_zbigfiles(st)

    out = sys.stdout if args.out == '-' else open(args.out, 'w')
    out.write('db %s\n' % args.datafs)
    for tid in tids:
        out.write('txn %s\n' % hx(tid))
        conn = db.open(at=tid)
        w = Walker()
        for foid in foids:
            try:
                f = conn.get(foid)
                f._p_activate()
            except POSKeyError:
                out.write('nofile %s\n' % hx(foid))
                continue
            except Exception as e:  # noqa: BLE001
                out.write('fileerr %s %s\n' % (hx(foid), type(e).__name__))
                continue
            report_file(out, w, f, foid, args.max_blocks)
        conn.close()
        # one historical connection per tid: don't let them (and their caches) pile up
        db.historical_pool.clear()
    if out is not sys.stdout:
        out.close()
    db.close()


if __name__ == '__main__':
    main()
