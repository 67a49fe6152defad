#!/usr/bin/env python
"""Commit to a data.fs on command, for the wcfsd filesystem tests.

usage: driver.py PATH/data.fs
       driver.py zeo://HOST:PORT    (commit through a ZEO ClientStorage; also
                                     zeo://SOCKET/PATH, ?storage=NAME)
       driver.py demo:(BASE)/(DELTA) (commit through a DemoStorage: to DELTA)
       driver.py postgresql://...   (commit through RelStorage, history-preserving)
       driver.py neo://NAME@MASTER  (commit through neo.client.Storage; run
                                    by the NEO venv's Python)

Reads one JSON object per line on stdin and answers one line on stdout
("error <why>" on failure); ids and tids are 16 hex digits:

    {"op": "new", "blksize": N}                    -> "oid OID"   new ZBigFile (in root, committed later)
    {"op": "write", "file": OID, "blk": N, "kind": "zblk0"|"zblk1"|"zblk",
     "data": HEX | "fill": BYTE, "len": N, "chunksize": N?}   -> "ok"
    {"op": "punch", "file": OID, "blk": N}         -> "ok"     block becomes a hole
    {"op": "truncate", "file": OID, "nblk": N}     -> "ok"
    {"op": "commit"}                               -> "tid TID"
    {"op": "block", "file": OID, "blk": N, "at": TID|null}
                                                   -> "data LEN" then LEN raw bytes (blksize, holes as zeros)
    {"op": "size", "file": OID, "at": TID|null}    -> "size N"
    {"op": "zblk", "file": OID, "blk": N}          -> "oid OID" or "oid -" (hole)
    {"op": "corrupt", "oid": OID}                  -> "tid TID"  garbage record for OID, stored with the
                                                                 low-level storage API
    {"op": "quit"}

Added for the oracle/reset tests (daemon/tests/fs_oracle.rs, fs_reset.rs):

    {"op": "sha", "file": OID, "at": TID|null}    -> "sha SIZE SHA1HEX"  sha1 of the whole file content
                                                    (blktab items, holes zero-filled, blocks padded)
    {"op": "content", "file": OID, "at": TID|null} -> "data LEN" then LEN raw bytes: the whole file
    {"op": "shape", "file": OID, "at": TID|null}  -> "shape DEPTH INLINE NKEYS"  blktab levels (buckets
                                                    count as one; 0: empty), INLINE 1 if the tree keeps
                                                    its only bucket inline in its own record
    {"op": "insrange", "file": OID, "lo": N, "n": N, "seed": N, "unique": P}
                                                   -> "ok"  keys lo..lo+n-1 set to ZBlk0s from a small pool
                                                    shared by the file's blocks (new own ZBlk0 with
                                                    probability P)
    {"op": "delrange", "file": OID, "lo": N, "n": N} -> "ok"  delete keys in lo..lo+n-1
    {"op": "link", "file": OID, "src": N, "dst": N, "move": BOOL}
                                                   -> "ok"  blktab[dst] = blktab[src] (shared ZBlk), then
                                                    del src if move (no-op if src is a hole)
    {"op": "patch", "file": OID, "blk": N, "off": N, "data": HEX, "kind": K, "chunksize": N?}
                                                   -> "ok"  block data with [off, off+len) replaced, stored
                                                    as K (ZBlk1: only changed chunks are rewritten)
    {"op": "newblktab", "file": OID, "nblk": N, "seed": N}
                                                   -> "ok"  the ZBigFile gets a new LOBTree (every 3rd key
                                                    a hole, new ZBlk0s of random bytes)
    {"op": "setblksize", "file": OID, "blksize": N} -> "ok" the ZBigFile's blksize changes (blocks kept)
    {"op": "touch"}                                -> "ok"  change an object that is no file (root counter)

Added for the ZEO restart tests (daemon/tests/zeo_restart.rs):

    {"op": "connected"}                            -> "ok"  waits (≤ 60 s) until the ZEO client is connected
                                                    again after a server restart (RelStorage: until a
                                                    poll and a load work again), then starts a fresh
                                                    transaction (sees what was committed meanwhile)

Reads "at" a tid go through a historical connection, so they are Python's
own view of the database at that tid: the oracle for @<tid>/ views.
"""
import binascii
import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'wcfs_testdata'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.Connection import TransactionMetaData  # noqa: E402
from BTrees.LOBTree import LOBTree  # noqa: E402
from ZODB.utils import p64, u64  # noqa: E402

from wendelin.bigfile.file_zodb import ZBigFile, ZBlk0  # noqa: E402
import pgstorage  # noqa: E402
import zurlstor  # noqa: E402


def h(b):
    return '%016x' % u64(b)


def unh(s):
    return p64(int(s, 16))


def open_storage(where, read_only=False):
    """A FileStorage at a path, a ZEO ClientStorage for zeo://HOST:PORT (or
    zeo://SOCKET, ?storage=NAME), a RelStorage for postgresql://..., a
    DemoStorage for demo:(BASE)/(DELTA) (zurlstor.open_zurl)."""
    return zurlstor.open_zurl(where, read_only=read_only)


class Driver:
    def __init__(self, path):
        self.pg = pgstorage.is_pg(path)
        self.db = ZODB.DB(open_storage(path))
        self.conn = self.db.open()
        self.root = self.conn.root()

    def file(self, oid, at=None):
        if at is None:
            return self.conn.get(unh(oid)), None
        if self.pg:
            # RelStorage's DB knows of commits only as of its last poll: a
            # historical connection at a newer tid would be "in the future".
            self.db.storage.poll_invalidations()
        conn = self.db.open(at=unh(at))
        return conn.get(unh(oid)), conn

    def op_new(self, c):
        f = ZBigFile(c['blksize'])
        self.conn.add(f)
        self.root['file-%d' % len(self.root)] = f
        return 'oid ' + h(f._p_oid)

    def op_write(self, c):
        f, _ = self.file(c['file'])
        if 'data' in c:
            data = binascii.unhexlify(c['data'])
        else:
            data = bytes([c['fill']]) * c['len']
        f.setblk(c['blk'], data, kind=c.get('kind', 'zblk0'), chunksize=c.get('chunksize'))
        return 'ok'

    def op_punch(self, c):
        self.file(c['file'])[0].punch(c['blk'])
        return 'ok'

    def op_truncate(self, c):
        self.file(c['file'])[0].truncate(c['nblk'])
        return 'ok'

    def op_commit(self, c):
        transaction.commit()
        if self.pg:
            return 'tid ' + h(pgstorage.committed_tid(self.conn))
        return 'tid ' + h(self.db.lastTransaction())

    def op_size(self, c):
        f, conn = self.file(c['file'], c.get('at'))
        try:
            return 'size %d' % f.size()
        finally:
            if conn is not None:
                conn.close()

    def op_zblk(self, c):
        f, _ = self.file(c['file'])
        z = f.blktab.get(c['blk'])
        return 'oid ' + ('-' if z is None else h(z._p_oid))

    def op_corrupt(self, c):
        st = self.db.storage
        oid = unh(c['oid'])
        _, serial = st.load(oid)
        txn = TransactionMetaData()
        st.tpc_begin(txn)
        st.store(oid, serial, b'\x80\x03garbage, not a pickle\xff\xfe', '', txn)
        st.tpc_vote(txn)
        tid = st.tpc_finish(txn)
        return 'tid ' + h(tid)

    def block(self, c):
        f, conn = self.file(c['file'], c.get('at'))
        try:
            return f.readblk(c['blk'])
        finally:
            if conn is not None:
                conn.close()

    # --- added for fs_oracle.rs / fs_reset.rs ---

    def _at(self, c, fn):
        f, conn = self.file(c['file'], c.get('at'))
        try:
            return fn(f)
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def _content(f):
        # Through the objects' own load paths: blktab items, ZBlk*.loadblkdata.
        bs = f.blksize
        parts = []
        nxt = 0
        for blk, zblk in f.blktab.items():
            if blk > nxt:
                parts.append(b'\0' * ((blk - nxt) * bs))
            data = zblk.loadblkdata(bs)
            parts.append(data)
            parts.append(b'\0' * (bs - len(data)))
            nxt = blk + 1
        out = b''.join(parts)
        assert len(out) == f.size(), (len(out), f.size())
        return out

    def content(self, c):
        return self._at(c, self._content)

    def op_sha(self, c):
        def sha(f):
            data = self._content(f)
            return 'sha %d %s' % (len(data), hashlib.sha1(data).hexdigest())
        return self._at(c, sha)

    @staticmethod
    def _shape(t):
        st = t.__getstate__()
        if st is None:
            return 0, 0
        items = st[0]
        if len(st) == 1 and len(items) == 1 and isinstance(items[0], tuple):
            return 1, 1  # one bucket, stored inline in the tree's record
        depth, node = 1, items[0]
        while isinstance(node, type(t)):
            depth += 1
            node = node.__getstate__()[0][0]
        return depth + 1, 0  # + the bucket level

    def op_shape(self, c):
        def shape(f):
            depth, inline = self._shape(f.blktab)
            return 'shape %d %d %d' % (depth, inline, len(f.blktab))
        return self._at(c, shape)

    def _pool(self, f):
        pools = self.__dict__.setdefault('pools', {})
        pool = pools.get(f._p_oid)
        if pool is None:
            rng = random.Random(u64(f._p_oid))
            pool = pools[f._p_oid] = [ZBlk0(bytes([i + 1]) + rng.randbytes(f.blksize - 1))
                                      for i in range(8)]
        return pool

    def op_insrange(self, c):
        f, _ = self.file(c['file'])
        rng = random.Random(c.get('seed', 0))
        pool = self._pool(f)
        p = c.get('unique', 0.2)
        for k in range(c['lo'], c['lo'] + c['n']):
            if rng.random() < p:
                f.blktab[k] = ZBlk0(rng.randbytes(rng.randrange(1, f.blksize + 1)))
            else:
                f.blktab[k] = rng.choice(pool)
        return 'ok'

    def op_delrange(self, c):
        f, _ = self.file(c['file'])
        for k in list(f.blktab.keys(min=c['lo'], max=c['lo'] + c['n'] - 1)):
            del f.blktab[k]
        return 'ok'

    def op_link(self, c):
        f, _ = self.file(c['file'])
        z = f.blktab.get(c['src'])
        if z is not None:
            f.blktab[c['dst']] = z
            if c.get('move') and c['src'] != c['dst']:
                del f.blktab[c['src']]
        return 'ok'

    def op_patch(self, c):
        f, _ = self.file(c['file'])
        data = bytearray(f.readblk(c['blk']))
        new = binascii.unhexlify(c['data'])
        off = c['off']
        data[off:off + len(new)] = new
        f.setblk(c['blk'], bytes(data[:f.blksize]), kind=c.get('kind', 'zblk1'),
                 chunksize=c.get('chunksize'))
        return 'ok'

    def op_newblktab(self, c):
        f, _ = self.file(c['file'])
        rng = random.Random(c.get('seed', 0))
        t = LOBTree()
        for k in range(c['nblk']):
            if k % 3 != 1 or k == c['nblk'] - 1:
                t[k] = ZBlk0(rng.randbytes(f.blksize))
        f.blktab = t
        return 'ok'

    def read_op(self, fn):
        """fn(), retried a few times over RelStorage: after a server restart
        a pooled connection fails once, then RelStorage opens a new one."""
        if not self.pg:
            return fn()
        import time
        for attempt in range(20):
            try:
                return fn()
            except Exception:  # noqa: BLE001 - a dead pooled connection
                transaction.abort()
                if attempt == 19:
                    raise
                # Historical connections are pooled with their dead
                # database connection: drop them.
                self.db.historical_pool.clear()
                time.sleep(0.1)

    def op_connected(self, c):
        import time
        st = self.db.storage
        deadline = time.time() + 60
        if self.pg:
            # RelStorage reconnects when used: until a poll and a load work.
            while True:
                try:
                    transaction.abort()
                    self.conn.sync()
                    self.root._p_activate()
                    transaction.begin()
                    return 'ok'
                except Exception:  # noqa: BLE001 - the server is still away
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
        while hasattr(st, 'is_connected') and not st.is_connected():
            if time.time() > deadline:
                raise RuntimeError('ZEO client not connected again after 60s')
            time.sleep(0.01)
        transaction.abort()
        transaction.begin()
        return 'ok'

    def op_touch(self, c):
        self.root['counter'] = self.root.get('counter', 0) + 1
        return 'ok'

    def op_setblksize(self, c):
        f, _ = self.file(c['file'])
        f.blksize = c['blksize']
        return 'ok'


# Operations that only read: over RelStorage, retried when a connection of
# the pool turns out dead after a server restart.
READ_OPS = ('size', 'zblk', 'sha', 'shape')


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = Driver(sys.argv[1])
    out = sys.stdout.buffer
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        c = json.loads(line)
        op = c['op']
        if op == 'quit':
            break
        try:
            if op in ('block', 'content'):
                data = d.read_op(lambda: getattr(d, op)(c))
                out.write(b'data %d\n' % len(data))
                out.write(data)
            elif op in READ_OPS:
                out.write(d.read_op(lambda: getattr(d, 'op_' + op)(c)).encode() + b'\n')
            else:
                out.write(getattr(d, 'op_' + op)(c).encode() + b'\n')
        except Exception as e:  # noqa: BLE001 — reported to the test
            transaction.abort()
            out.write(('error %s: %s\n' % (type(e).__name__, e)).replace('\n', ' ').encode() + b'\n')
        out.flush()
    transaction.abort()
    d.conn.close()
    d.db.close()


if __name__ == '__main__':
    main()
