#!/usr/bin/env python
"""Content identity of every block of ZBigFiles as Python sees them at a tid,
for the isolation-protocol model (daemon/tests/iso_oracle.rs).

usage: iso_blkid.py PATH/data.fs
       iso_blkid.py zeo://HOST:PORT
       iso_blkid.py postgresql://...   (RelStorage, history-preserving)

Reads one JSON object per line on stdin: {"files": [OID, ...], "at": TID}
(16 hex digits) and answers one line per file, then "end":

    ids OID BLK:IDENT BLK:IDENT ...

IDENT is the block's ZBlk "oid.serial", followed for a ZBlk1 by
"+offset=oid.serial" of each chunk (ZData). A hole has no entry. Two
states of a block differ iff wendelin.core changed it (it always gives a
changed block a new ZBlk revision, or a different ZBlk).

The storage is opened read-only afresh for every request (the writer is
another process; a FileStorage does not see appends after it opened).
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'wcfs_testdata'))

import ZODB  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import p64, u64  # noqa: E402

from wendelin.bigfile.file_zodb import ZBlk1  # noqa: E402
import pgstorage  # noqa: E402


def open_storage(where, read_only):
    """A FileStorage at a path, a ZEO ClientStorage for zeo://HOST:PORT, a
    RelStorage for postgresql://..., a NEO client for neo://..."""
    if pgstorage.is_pg(where):
        return pgstorage.open_relstorage(where, read_only=read_only)
    if where.startswith('zeo://'):
        from ZEO.ClientStorage import ClientStorage
        host, port = where[len('zeo://'):].rsplit(':', 1)
        return ClientStorage((host, int(port)), read_only=read_only)
    if where.startswith('neo://'):
        # neo://NAME@HOST:PORT[,HOST:PORT...], in the NEO venv.
        from neo.client.Storage import Storage
        name, masters = where[len('neo://'):].rsplit('@', 1)
        return Storage(master_nodes=masters.replace(',', ' '), name=name,
                       read_only=read_only)
    return FileStorage(where, read_only=read_only)


def ident(obj):
    obj._p_activate()
    return '%016x.%016x' % (u64(obj._p_oid), u64(obj._p_serial))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    out = sys.stdout
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        c = json.loads(line)
        try:
            db = ZODB.DB(open_storage(path, read_only=True))
            try:
                conn = db.open(at=p64(int(c['at'], 16)))
                lines = []
                for foid in c['files']:
                    f = conn.get(p64(int(foid, 16)))
                    items = []
                    for blk, z in f.blktab.items():
                        parts = [ident(z)]
                        if isinstance(z, ZBlk1):
                            for off, zd in z.chunktab.items():
                                parts.append('%d=%s' % (off, ident(zd)))
                        items.append('%d:%s' % (blk, '+'.join(parts)))
                    lines.append(' '.join(['ids', foid] + items))
                conn.close()
            finally:
                db.close()
            for ln in lines:
                out.write(ln + '\n')
            out.write('end\n')
        except Exception as e:  # noqa: BLE001 — reported to the test
            out.write(('error %s: %s' % (type(e).__name__, e)).replace('\n', ' ') + '\n')
        out.flush()


if __name__ == '__main__':
    main()
