"""wcfs — Python bindings of libwcfs (SPEC §8), over its C ABI with ctypes.

    import wcfs
    wc = wcfs.join("file:///path/to/data.fs", autostart=True)   # or wcfs.attach(mountpoint)
    conn = wc.connect(at)                 # a view of the database as of `at`
    fh = conn.open(oid)                   # a ZBigFile
    m = fh.mmap(0, 16)                    # blocks [0, 16)
    arr = numpy.frombuffer(m.mem, dtype=numpy.uint8)    # no copy
    conn.resync(newer_at)                 # the memory now shows `newer_at`
    m.unmap(); fh.close(); conn.close(); wc.close()

Tids and oids are accepted as ``int`` or as 8-byte big-endian ``bytes`` (the
form ZODB uses); they are returned as ``int``. Errors raise ``OSError`` with
the errno and the library's message. Every object is also a context manager
and is released when garbage-collected (children keep their parents alive);
explicit close is still the way to release a view at a known point.

``Mapping.mem`` is a read-only ``memoryview`` of the mapped memory itself (no
copy). It keeps the Mapping alive, so memory is never unmapped under a live
view by the garbage collector; after an explicit ``unmap()`` or when the Conn
is closed, touching views that are still around faults (SIGSEGV), as in C.

Where the library is loaded from, first found wins:
  1. ``$WCFS_LIBRARY`` (the path of a libwcfs.so);
  2. ``libwcfs.so.<abi>`` in this package (the wheel's copy, under its SONAME);
  3. the cargo target directory of the source tree this package sits in
     (``$CARGO_TARGET_DIR`` or ``<repo>/target``; ``release`` before ``debug``);
  4. the system's library path (``libwcfs.so.<major>``, e.g. installed with cmake/).

The wheel (python/pyproject.toml) bundles the library and ``wcfsd`` in this
package, side by side: ``join(zurl, autostart=True)`` starts that wcfsd, and
``python -m wcfs serve|start|status|stop ZURL`` runs it (``__main__``). For
Cython, ``cimport wcfs.wcfs`` with ``get_include()`` on the include path,
linked against ``library_path`` with an rpath to its directory.
"""

import ctypes
import ctypes.util
import os

__all__ = ['join', 'attach', 'WCFS', 'Conn', 'FileH', 'Mapping', 'version', 'library_path',
           'get_include']

# The SONAME's number, for the system lookup: WCFS_ABI_VERSION of the
# header (defined in src/ffi/abi.rs; python/tests/test_api.py checks they agree).
_SOVERSION = 0


def _candidates():
    env = os.environ.get('WCFS_LIBRARY')
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, 'libwcfs.so.%d' % _SOVERSION)
    repo = os.path.dirname(os.path.dirname(here))
    target = os.environ.get('CARGO_TARGET_DIR') or os.path.join(repo, 'target')
    for profile in ('release', 'debug'):
        yield os.path.join(target, profile, 'libwcfs.so')
    yield ctypes.util.find_library('wcfs') or 'libwcfs.so.%d' % _SOVERSION


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + ' (missing)')
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append('%s (%s)' % (path, e))
    raise ImportError('libwcfs not found; tried: ' + '; '.join(tried) +
                      ' — set $WCFS_LIBRARY or build it with `cargo build --release -p wcfs`')


_lib, library_path = _load()

_h = ctypes.c_void_p
_out = ctypes.POINTER(ctypes.c_void_p)
_u64, _i64, _int = ctypes.c_uint64, ctypes.c_int64, ctypes.c_int
_u8p = ctypes.POINTER(ctypes.c_uint8)

for _name, _res, _args in [
    ('wcfs_last_error', ctypes.c_char_p, []),
    ('wcfs_version', ctypes.c_char_p, []),
    ('wcfs_join', _int, [ctypes.c_char_p, _int, _out]),
    ('wcfs_attach', _int, [ctypes.c_char_p, _out]),
    ('wcfs_mountpoint', ctypes.c_char_p, [_h]),
    ('wcfs_head_at', _int, [_h, ctypes.POINTER(_u64)]),
    ('wcfs_close', _int, [_h]),
    ('wcfs_connect', _int, [_h, _u64, _out]),
    ('wcfs_conn_at', _u64, [_h]),
    ('wcfs_conn_resync', _int, [_h, _u64]),
    ('wcfs_conn_close', _int, [_h]),
    ('wcfs_conn_open', _int, [_h, _u64, _out]),
    ('wcfs_fileh_blksize', ctypes.c_size_t, [_h]),
    ('wcfs_fileh_oid', _u64, [_h]),
    ('wcfs_fileh_close', _int, [_h]),
    ('wcfs_fileh_mmap', _int, [_h, _i64, _i64, _out]),
    ('wcfs_mapping_mem_start', ctypes.c_void_p, [_h]),
    ('wcfs_mapping_mem_stop', ctypes.c_void_p, [_h]),
    ('wcfs_mapping_blk_start', _i64, [_h]),
    ('wcfs_mapping_remmap_blk', _int, [_h, _i64]),
    ('wcfs_mapping_unmap', _int, [_h]),
    ('wcfs_live_handles', ctypes.c_size_t, []),
]:
    _f = getattr(_lib, _name)
    _f.restype = _res
    _f.argtypes = _args


def version():
    """The version of the loaded libwcfs."""
    return _lib.wcfs_version().decode()


def get_include():
    """The directory of ``wcfs.h``, for C code that ``cimport wcfs.wcfs``
    (like ``numpy.get_include()``): the copy in the installed wheel, else the
    source tree's ``include/``."""
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = os.path.join(here, 'include')
    if os.path.exists(os.path.join(bundled, 'wcfs.h')):
        return bundled
    return os.path.join(os.path.dirname(os.path.dirname(here)), 'include')


def _last_error():
    # ctypes releases the GIL around calls but runs them on this same OS
    # thread, so the thread-local message is ours.
    msg = _lib.wcfs_last_error()
    return msg.decode('utf-8', 'replace') if msg else ''


def _check(rc):
    if rc < 0:
        raise OSError(-rc, _last_error())
    return rc


def _id(x, what):
    """An oid/tid given as int or as 8 big-endian bytes."""
    if isinstance(x, bool):
        raise TypeError('%s: want int or 8-byte bytes, not bool' % what)
    if isinstance(x, int):
        if not 0 <= x < 1 << 64:
            raise ValueError('%s out of range: %d' % (what, x))
        return x
    if isinstance(x, (bytes, bytearray, memoryview)):
        b = bytes(x)
        if len(b) != 8:
            raise ValueError('%s: want 8 bytes, got %d' % (what, len(b)))
        return int.from_bytes(b, 'big')
    raise TypeError('%s: want int or 8-byte bytes, not %s' % (what, type(x).__name__))


def _new(call, *args):
    out = ctypes.c_void_p()
    _check(call(*args, ctypes.byref(out)))
    return out.value


class _Handle:
    """A C handle released exactly once: by close()/unmap(), or when garbage-collected."""
    _release = None  # name of the C function that releases this kind

    def __init__(self, h, parent=None):
        self._h = h
        # A child keeps its parent object alive, so that garbage collection
        # never closes a WCFS or Conn under a view that is still in use
        # (``wcfs.join(z).connect(at).open(oid).mmap(0, n)`` is fine).
        self._parent = parent

    def _handle(self):
        if self._h is None:
            raise OSError(22, '%s is closed' % type(self).__name__)  # EINVAL, as the C API says
        return self._h

    def _close(self):
        h, self._h = self._h, None
        if h is None:
            raise OSError(22, '%s is already closed' % type(self).__name__)
        _check(getattr(_lib, self._release)(h))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._h is not None:
            self._close()

    def __del__(self):
        h, self._h = getattr(self, '_h', None), None
        if h is not None:
            try:
                getattr(_lib, self._release)(h)
            except Exception:  # noqa: BLE001 — interpreter shutdown
                pass


def join(zurl, autostart=False):
    """The WCFS serving `zurl`, starting wcfsd for it if `autostart` and none serves."""
    return WCFS(_new(_lib.wcfs_join, os.fsencode(zurl), 1 if autostart else 0))


def attach(mountpoint):
    """The WCFS already mounted at `mountpoint`."""
    return WCFS(_new(_lib.wcfs_attach, os.fsencode(mountpoint)))


class WCFS(_Handle):
    """A joined wcfsd."""
    _release = 'wcfs_close'

    @property
    def mountpoint(self):
        mp = _lib.wcfs_mountpoint(self._handle())
        if mp is None:
            raise OSError(22, _last_error())
        return os.fsdecode(mp)

    def head_at(self):
        """The tid head/ shows now (int)."""
        at = _u64()
        _check(_lib.wcfs_head_at(self._handle(), ctypes.byref(at)))
        return at.value

    def connect(self, at):
        """A Conn: a view of the database as of `at`."""
        return Conn(_new(_lib.wcfs_connect, self._handle(), _id(at, 'at')), self)

    def close(self):
        self._close()


class Conn(_Handle):
    """A view of the database as of `at`."""
    _release = 'wcfs_conn_close'

    @property
    def at(self):
        at = _lib.wcfs_conn_at(self._handle())
        if at == 0:
            raise OSError(22, _last_error())
        return at

    def resync(self, at):
        """Moves the view forward to `at` (going back takes the Conn down)."""
        _check(_lib.wcfs_conn_resync(self._handle(), _id(at, 'at')))

    def open(self, oid):
        """Opens ZBigFile `oid` under this view."""
        return FileH(_new(_lib.wcfs_conn_open, self._handle(), _id(oid, 'oid')), self)

    def close(self):
        self._close()


class FileH(_Handle):
    """A ZBigFile opened under a Conn."""
    _release = 'wcfs_fileh_close'

    @property
    def blksize(self):
        n = _lib.wcfs_fileh_blksize(self._handle())
        if n == 0:
            raise OSError(22, _last_error())
        return n

    @property
    def oid(self):
        return _lib.wcfs_fileh_oid(self._handle())

    def mmap(self, blk_start, blk_len):
        """Maps blocks [blk_start, blk_start+blk_len) read-only."""
        return Mapping(_new(_lib.wcfs_fileh_mmap, self._handle(), blk_start, blk_len), self)

    def close(self):
        self._close()


class Mapping(_Handle):
    """Blocks of a file in memory, as of the Conn's `at`."""
    _release = 'wcfs_mapping_unmap'

    def __init__(self, h, parent):
        super().__init__(h, parent)
        start = _lib.wcfs_mapping_mem_start(h)
        stop = _lib.wcfs_mapping_mem_stop(h)
        if not start or not stop:
            raise OSError(22, _last_error())
        buf = (ctypes.c_uint8 * (stop - start)).from_address(start)
        # The buffer object keeps the Mapping alive while any view of it
        # exists (memoryview → ctypes array → Mapping).
        buf.mapping = self
        self._mem = memoryview(buf).cast('B').toreadonly()

    @property
    def mem(self):
        """The mapped memory: a read-only memoryview, without copying."""
        self._handle()
        return self._mem

    @property
    def blk_start(self):
        return _check(_lib.wcfs_mapping_blk_start(self._handle()))

    def remmap_blk(self, blk):
        """Re-establishes the base mapping of block `blk` (head or its pinned @rev)."""
        _check(_lib.wcfs_mapping_remmap_blk(self._handle(), blk))

    def unmap(self):
        self._close()
        try:
            self._mem.release()
        except (BufferError, ValueError):
            pass  # views derived from it (numpy arrays) are still alive


def _live_handles():
    """How many C handles are live in this process (for leak checks)."""
    return _lib.wcfs_live_handles()
