"""ZBigFile and its blocks, as stored in ZODB — a small implementation for tests.

Only the *stored form* is compatible with wendelin.core; everything else is
ours and deliberately simple (no virtual memory, no file handles). The stored
form is fixed by existing databases:

    class      pickled state
    ZBigFile   (blksize, blktab)   blktab: LOBTree {blk -> ZBlk*}
    ZBlk0      bytes               block data, trailing zeros stripped
    ZBlk       bytes               legacy name of ZBlk0 (old databases)
    ZBlk1      chunktab            IOBTree {offset -> ZData}
    ZData      bytes               one chunk, trailing zeros stripped

Reading rules (shared with the Rust reader, which must agree bit for bit):
a block missing from blktab is a hole and reads as zeros; data shorter than
blksize is zero-padded; ZBlk1 chunks are placed at their offsets and must
neither overlap nor run past blksize — otherwise the block is corrupt.

Writing rule kept from wendelin.core: whenever block data changes, the ZBlk
gets a new revision (ZBlk1 included, even if only a chunk changed) or the
block is pointed at a new ZBlk. WCFS relies on it to detect changed blocks.
"""

from BTrees.IOBTree import IOBTree
from BTrees.LOBTree import LOBTree
from persistent import Persistent


class BlockCorrupt(Exception):
    """Stored block data that cannot be turned into a block."""


class ZBlkBase(Persistent):
    __slots__ = ()

    def loadblkdata(self, blksize):
        """Block bytes as stored, not padded (may be shorter than blksize)."""
        raise NotImplementedError

    def setblkdata(self, data, **kw):
        raise NotImplementedError


def _as_bytes(x):
    # Records written by Python 2 keep `str` data; ZODB's unpickler hands
    # ASCII-only ones to us as Python 3 `str`.
    if isinstance(x, str):
        return x.encode('latin1')
    return bytes(x)


class ZBlk0(ZBlkBase):
    """A block as one object holding its bytes."""

    __slots__ = ('blkdata',)

    def __init__(self, data=b''):
        self.blkdata = bytes(data).rstrip(b'\0')

    def __getstate__(self):
        return self.blkdata

    def __setstate__(self, state):
        self.blkdata = state

    def loadblkdata(self, blksize):
        data = _as_bytes(self.blkdata)
        if len(data) > blksize:
            raise BlockCorrupt('ZBlk0: %d bytes > blksize %d' % (len(data), blksize))
        return data

    def setblkdata(self, data, **kw):
        self.blkdata = bytes(data).rstrip(b'\0')
        # New revision even if the bytes happen to be equal (rule above).
        self._p_changed = True


class ZBlk(ZBlk0):
    """Legacy class name of ZBlk0: same state, distinct pickled class name."""

    __slots__ = ()


class ZData(Persistent):
    """One chunk of a ZBlk1."""

    __slots__ = ('data',)

    def __init__(self, data=b''):
        self.data = data

    def __getstate__(self):
        return self.data

    def __setstate__(self, state):
        self.data = state


class ZBlk1(ZBlkBase):
    """A block split into chunks kept in an IOBTree {offset -> ZData}."""

    __slots__ = ('chunktab',)

    CHUNKSIZE = 4096

    def __init__(self):
        self.chunktab = IOBTree()

    def __getstate__(self):
        return self.chunktab

    def __setstate__(self, state):
        self.chunktab = state

    def loadblkdata(self, blksize):
        buf = bytearray()
        end = 0
        for off, chunk in self.chunktab.items():
            data = _as_bytes(chunk.data)
            if off < end:
                raise BlockCorrupt('ZBlk1: chunk @%d overlaps previous chunk ending @%d' % (off, end))
            if off + len(data) > blksize:
                raise BlockCorrupt('ZBlk1: chunk @%d+%d runs past blksize %d' % (off, len(data), blksize))
            buf.extend(b'\0' * (off - len(buf)))
            buf.extend(data)
            end = off + len(data)
        return bytes(buf)

    def setblkdata(self, data, chunksize=None, **kw):
        """Store data in chunks of `chunksize`; all-zero chunks are not stored.

        A chunk size different from the one already used rebuilds the table,
        so chunks never mix sizes (and never overlap).
        """
        chunksize = chunksize or self.CHUNKSIZE
        data = bytes(data)
        tab = self.chunktab
        if any(off % chunksize or len(_as_bytes(c.data)) > chunksize for off, c in tab.items()):
            tab.clear()
        nchunks = (len(data) + chunksize - 1) // chunksize
        for off in list(tab.keys()):
            if off >= nchunks * chunksize:
                del tab[off]
        for i in range(nchunks):
            off = i * chunksize
            piece = data[off:off + chunksize].rstrip(b'\0')
            old = tab.get(off)
            if not piece:
                if old is not None:
                    del tab[off]
            elif old is None:
                tab[off] = ZData(piece)
            elif _as_bytes(old.data) != piece:
                old.data = piece
        self._p_changed = True


ZBLK_KINDS = {'zblk0': ZBlk0, 'zblk': ZBlk, 'zblk1': ZBlk1}


class ZBigFile(Persistent):
    """A file of fixed-size blocks, each block a ZBlk in blktab."""

    def __init__(self, blksize):
        self.blksize = blksize
        self.blktab = LOBTree()

    def __getstate__(self):
        return (self.blksize, self.blktab)

    def __setstate__(self, state):
        self.blksize, self.blktab = state

    # --- writing ---

    def setblk(self, blk, data, kind='zblk0', chunksize=None):
        """Set block `blk` to `data` (≤ blksize, zero-padded on read).

        Reuses the block's ZBlk when it has the wanted kind (giving it a new
        revision), else points the block at a new ZBlk.
        """
        data = bytes(data)
        if len(data) > self.blksize:
            raise ValueError('data longer than blksize')
        cls = ZBLK_KINDS[kind]
        zblk = self.blktab.get(blk)
        if type(zblk) is not cls:
            zblk = cls()
            self.blktab[blk] = zblk
        zblk.setblkdata(data, chunksize=chunksize)

    def punch(self, blk):
        """Make block `blk` a hole."""
        if blk in self.blktab:
            del self.blktab[blk]

    def truncate(self, nblk):
        """Drop every block ≥ nblk."""
        for blk in list(self.blktab.keys(min=nblk)):
            del self.blktab[blk]

    # --- reading ---

    def size(self):
        if not self.blktab:
            return 0
        return (self.blktab.maxKey() + 1) * self.blksize

    def readblk(self, blk):
        """Block bytes exactly blksize long; holes read as zeros."""
        zblk = self.blktab.get(blk)
        if zblk is None:
            return b'\0' * self.blksize
        data = zblk.loadblkdata(self.blksize)
        return data + b'\0' * (self.blksize - len(data))
