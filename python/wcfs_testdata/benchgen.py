#!/usr/bin/env python
"""Write the database the Rust benchmark `bigfile_load` reads.

usage: benchgen.py DATA.FS [--mib N] [--blksize BYTES] [--seed N]

One ZBigFile of N MiB (default 512) in ZBlk0 blocks of 2 MiB of random
(incompressible) bytes, committed a few blocks per transaction. Writes
DATA.FS.info with `oid=<16 hex> blksize=<n> nblk=<n>` for the benchmark.
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import u64  # noqa: E402

from wendelin.bigfile.file_zodb import ZBigFile, ZBlk0  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('datafs')
    ap.add_argument('--mib', type=int, default=512)
    ap.add_argument('--blksize', type=int, default=2 << 20)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    for ext in ('', '.index', '.lock', '.tmp', '.info'):
        if os.path.exists(args.datafs + ext):
            os.remove(args.datafs + ext)
    rng = random.Random(args.seed)
    nblk = (args.mib << 20) // args.blksize
    db = ZODB.DB(FileStorage(args.datafs))
    conn = db.open()
    root = conn.root()
    f = root['bench'] = ZBigFile(args.blksize)
    transaction.commit()
    for blk in range(nblk):
        # last byte nonzero: every block is stored full-length
        f.blktab[blk] = ZBlk0(rng.randbytes(args.blksize - 1) + b'\x01')
        if blk % 8 == 7:
            transaction.commit()
            conn.cacheMinimize()
    transaction.commit()
    oid = u64(f._p_oid)
    conn.close()
    db.close()
    with open(args.datafs + '.info', 'w') as out:
        out.write('oid=%016x blksize=%d nblk=%d\n' % (oid, args.blksize, nblk))


if __name__ == '__main__':
    main()
