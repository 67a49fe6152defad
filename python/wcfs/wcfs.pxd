# cython: language_level=3
# Declarations of the C API of libwcfs (include/wcfs.h, SPEC §8) for Cython:
#
#     cimport wcfs.wcfs as c
#     cdef c.wcfs_WCFS *wc
#     if c.wcfs_attach(b"/mnt/wcfs", &wc) < 0: raise OSError(..., c.wcfs_last_error())
#
# Compile with the header's directory on the include path and link -lwcfs
# (pkg-config --cflags --libs wcfs). Every call is thread-safe and declared
# nogil. Kept in sync with the header by python/tests/test_cython.py, which
# builds and runs an extension that calls each function.

from libc.stdint cimport int64_t, uint8_t, uint64_t

cdef extern from "wcfs.h" nogil:
    ctypedef uint64_t wcfs_tid
    ctypedef uint64_t wcfs_oid

    ctypedef struct wcfs_WCFS:
        pass
    ctypedef struct wcfs_Conn:
        pass
    ctypedef struct wcfs_FileH:
        pass
    ctypedef struct wcfs_Mapping:
        pass

    const char *wcfs_last_error()
    const char *wcfs_version()

    int wcfs_join(const char *zurl, int autostart, wcfs_WCFS **out)
    int wcfs_attach(const char *mountpoint, wcfs_WCFS **out)
    const char *wcfs_mountpoint(const wcfs_WCFS *wc)
    int wcfs_head_at(wcfs_WCFS *wc, wcfs_tid *out)
    int wcfs_close(wcfs_WCFS *wc)

    int wcfs_connect(wcfs_WCFS *wc, wcfs_tid at, wcfs_Conn **out)
    wcfs_tid wcfs_conn_at(const wcfs_Conn *conn)
    int wcfs_conn_resync(wcfs_Conn *conn, wcfs_tid at)
    int wcfs_conn_close(wcfs_Conn *conn)

    int wcfs_conn_open(wcfs_Conn *conn, wcfs_oid foid, wcfs_FileH **out)
    size_t wcfs_fileh_blksize(const wcfs_FileH *fh)
    wcfs_oid wcfs_fileh_oid(const wcfs_FileH *fh)
    int wcfs_fileh_close(wcfs_FileH *fh)

    int wcfs_fileh_mmap(wcfs_FileH *fh, int64_t blk_start, int64_t blk_len, wcfs_Mapping **out)
    const uint8_t *wcfs_mapping_mem_start(const wcfs_Mapping *m)
    const uint8_t *wcfs_mapping_mem_stop(const wcfs_Mapping *m)
    int64_t wcfs_mapping_blk_start(const wcfs_Mapping *m)
    int wcfs_mapping_remmap_blk(wcfs_Mapping *m, int64_t blk)
    int wcfs_mapping_unmap(wcfs_Mapping *m)

    size_t wcfs_live_handles()
