# cython: language_level=3
# A Cython extension against the installed wheel: `cimport wcfs.wcfs` finds
# the wheel's wcfs.pxd, compiled with wcfs.get_include() and linked against
# wcfs.library_path with an rpath to it (see packaging/test).
cimport wcfs.wcfs as c


def version():
    return c.wcfs_version().decode()


def head_at(mountpoint):
    """head/at of the daemon at `mountpoint`, through the C API."""
    cdef c.wcfs_WCFS *wc
    cdef c.wcfs_tid at
    if c.wcfs_attach(mountpoint.encode(), &wc) < 0:
        raise OSError(c.wcfs_last_error().decode())
    try:
        if c.wcfs_head_at(wc, &at) < 0:
            raise OSError(c.wcfs_last_error().decode())
        return at
    finally:
        c.wcfs_close(wc)
