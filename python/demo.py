#!/usr/bin/env python
"""Create a small demo database: a few ZBigFiles in a data.fs.

usage: demo.py PATH/data.fs

The root object maps names to the files; the oids are what wcfsd serves as
head/bigfile/<oid>.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'wcfs_testdata'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402

from wendelin.bigfile.file_zodb import ZBigFile  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    db = ZODB.DB(FileStorage(path))
    conn = db.open()
    root = conn.root()

    # A 2 MiB-block array of 8 blocks counting up, with one hole.
    counting = ZBigFile(2 * 1024 * 1024)
    for blk in range(8):
        if blk == 5:
            continue
        counting.setblk(blk, bytes([blk + 1]) * (2 * 1024 * 1024))
    root['counting'] = counting
    # A small text file in 4 KiB blocks, chunked (ZBlk1) and plain (ZBlk0).
    text = ZBigFile(4096)
    text.setblk(0, b'hello, world\n', kind='zblk0')
    text.setblk(1, b'block one, stored in chunks\n' * 100, kind='zblk1', chunksize=1024)
    root['text'] = text
    transaction.commit()

    # A second revision: change one block of each file.
    counting.setblk(2, b'\xff' * 4096)
    text.setblk(0, b'hello again\n')
    transaction.commit()

    for name in ('counting', 'text'):
        f = root[name]
        print('%-8s oid %016x  blksize %d  size %d' % (
            name, int.from_bytes(f._p_oid, 'big'), f.blksize, f.size()))
    conn.close()
    db.close()


if __name__ == '__main__':
    main()
