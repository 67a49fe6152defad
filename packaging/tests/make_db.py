#!/usr/bin/env python
"""Writes the database of the packaging tests with Python ZODB, and what
Python ZODB reads back from it (the oracle).

usage: make_db.py DIR             the first transaction
       make_db.py DIR --commit    the second one (while a daemon serves DIR)

DIR/data.fs     one ZBigFile of 64 KiB blocks. First transaction (at1): 4
                blocks — random plain (ZBlk0) and chunked (ZBlk1) blocks, a
                hole, a short block. Second (head): blocks 1 and 3 change,
                the file grows to 6 blocks (block 4 a hole).
DIR/at1.bin     the file as Python ZODB reads it as of at1
DIR/head.bin    ... and as of head (after --commit)
DIR/db.env      OID, AT1 and, after --commit, HEAD (16 hex digits) for the shell

The second transaction is committed while a client looks at at1: it must
go on seeing at1 (the daemon pins the changed blocks to @at1) — a daemon
only keeps history from its start, so a view of a transaction older than
that is refused.
"""
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', 'python', 'wcfs_testdata'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import p64, u64  # noqa: E402

from wendelin.bigfile.file_zodb import ZBigFile  # noqa: E402

BLKSIZE = 64 * 1024


def save(db, out, oid, name, nblk):
    """Writes the file as of the last transaction, read back by Python ZODB
    in a fresh connection, to out/<name>.bin; appends its tid to db.env."""
    at = u64(db.lastTransaction())
    conn = db.open(at=p64(at))
    try:
        f = conn.get(oid)
        data = b''.join(f.readblk(blk) for blk in range(f.size() // f.blksize))
    finally:
        conn.close()
    assert len(data) == nblk * BLKSIZE, (name, len(data))
    with open(os.path.join(out, name + '.bin'), 'wb') as w:
        w.write(data)
    with open(os.path.join(out, 'db.env'), 'a') as w:
        if name == 'at1':
            w.write('OID=%016x\n' % u64(oid))
        w.write('%s=%016x\n' % (name.upper(), at))


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ['--commit']):
        sys.exit(__doc__)
    out = sys.argv[1]
    rng = random.Random(14 + len(sys.argv))
    db = ZODB.DB(FileStorage(os.path.join(out, 'data.fs')))
    conn = db.open()
    root = conn.root()
    if len(sys.argv) == 2:
        f = root['file'] = ZBigFile(BLKSIZE)
        f.setblk(0, rng.randbytes(BLKSIZE))
        f.setblk(1, rng.randbytes(BLKSIZE), kind='zblk1', chunksize=4096)
        f.setblk(3, b'short block')  # block 2 is a hole
        transaction.commit()
        save(db, out, f._p_oid, 'at1', 4)
    else:
        f = root['file']
        f.setblk(1, rng.randbytes(BLKSIZE // 2), kind='zblk1', chunksize=4096)
        f.setblk(3, rng.randbytes(BLKSIZE))
        f.setblk(5, rng.randbytes(100))  # block 4 is a hole
        transaction.commit()
        save(db, out, f._p_oid, 'head', 6)
    conn.close()
    db.close()


if __name__ == '__main__':
    main()
