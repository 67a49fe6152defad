#!/usr/bin/env python
"""Commit to a data.fs on command, for the wcfsd filesystem tests.

usage: driver.py PATH/data.fs

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

Reads "at" a tid go through a historical connection, so they are Python's
own view of the database at that tid: the oracle for @<tid>/ views.
"""
import binascii
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'wcfs_testdata'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.Connection import TransactionMetaData  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import p64, u64  # noqa: E402

from wendelin.bigfile.file_zodb import ZBigFile  # noqa: E402


def h(b):
    return '%016x' % u64(b)


def unh(s):
    return p64(int(s, 16))


class Driver:
    def __init__(self, path):
        self.db = ZODB.DB(FileStorage(path))
        self.conn = self.db.open()
        self.root = self.conn.root()

    def file(self, oid, at=None):
        if at is None:
            return self.conn.get(unh(oid)), None
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
            if op == 'block':
                data = d.block(c)
                out.write(b'data %d\n' % len(data))
                out.write(data)
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
