"""A process holding one view for test_isolation.py.

usage: view_worker.py MNT OIDHEX ATHEX NBLK

Maps blocks [0, NBLK) of the file as of AT, prints "ready"; on each "check"
line prints "view SIZE SHA1" of the memory up to the file's size at AT (the
rest must be zeros, else it prints "nonzero-tail"). Exits at end of input.
"""
import hashlib
import sys

import wcfs


def main():
    mnt, oid, at, nblk = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]), int(sys.argv[4])
    wc = wcfs.attach(mnt)
    conn = wc.connect(at)
    fh = conn.open(oid)
    m = fh.mmap(0, nblk)
    print('ready', flush=True)
    for line in sys.stdin:
        if line.strip() != 'check':
            continue
        mem = bytes(m.mem)
        size = len(mem.rstrip(b'\0'))
        size = (size + fh.blksize - 1) // fh.blksize * fh.blksize
        print('view %d %s' % (size, hashlib.sha1(mem[:size]).hexdigest()), flush=True)
    m.unmap()
    fh.close()
    conn.close()
    wc.close()


if __name__ == '__main__':
    main()
