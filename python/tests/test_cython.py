"""wcfs/wcfs.pxd declares the C API for Cython: compile a tiny extension
that cimports it and calls every function, and run it (against a real
daemon for the data path)."""
import importlib.util
import os
import subprocess
import sys
import sysconfig

import pytest

import wcfs

PYDIR = os.path.dirname(os.path.dirname(os.path.abspath(wcfs.__file__)))
INCLUDE = os.path.join(os.path.dirname(PYDIR), 'include')

EXT = r'''
# cython: language_level=3
cimport wcfs.wcfs as c
from libc.errno cimport EINVAL

def version():
    return c.wcfs_version().decode()

def errors():
    cdef c.wcfs_WCFS *wc = NULL
    cdef c.wcfs_Conn *conn = NULL
    cdef c.wcfs_FileH *fh = NULL
    cdef c.wcfs_Mapping *m = NULL
    cdef c.wcfs_tid at = 0
    rcs = [c.wcfs_join(NULL, 0, &wc), c.wcfs_attach(NULL, &wc), c.wcfs_head_at(NULL, &at),
           c.wcfs_close(NULL), c.wcfs_connect(NULL, 1, &conn), c.wcfs_conn_resync(NULL, 1),
           c.wcfs_conn_close(NULL), c.wcfs_conn_open(NULL, 1, &fh), c.wcfs_fileh_close(NULL),
           c.wcfs_fileh_mmap(NULL, 0, 1, &m), c.wcfs_mapping_remmap_blk(NULL, 0),
           c.wcfs_mapping_unmap(NULL), c.wcfs_mapping_blk_start(NULL)]
    vals = [c.wcfs_mountpoint(NULL) == NULL, c.wcfs_conn_at(NULL), c.wcfs_fileh_blksize(NULL),
            c.wcfs_fileh_oid(NULL), c.wcfs_mapping_mem_start(NULL) == NULL,
            c.wcfs_mapping_mem_stop(NULL) == NULL, c.wcfs_live_handles()]
    return rcs, vals, c.wcfs_last_error().decode(), EINVAL

cdef check(int rc):
    if rc < 0:
        raise OSError(-rc, c.wcfs_last_error().decode())

def read_blocks(mnt, c.wcfs_oid oid, c.wcfs_tid at, long long blk, long long n):
    """Blocks [blk, blk+n) of file `oid` as of `at`, read through a Mapping."""
    cdef c.wcfs_WCFS *wc
    cdef c.wcfs_Conn *conn
    cdef c.wcfs_FileH *fh
    cdef c.wcfs_Mapping *m
    check(c.wcfs_attach(mnt.encode(), &wc))
    mp = c.wcfs_mountpoint(wc).decode()
    check(c.wcfs_connect(wc, at, &conn))
    assert c.wcfs_conn_at(conn) == at
    check(c.wcfs_conn_open(conn, oid, &fh))
    assert c.wcfs_fileh_oid(fh) == oid
    bs = c.wcfs_fileh_blksize(fh)
    check(c.wcfs_fileh_mmap(fh, blk, n, &m))
    assert c.wcfs_mapping_blk_start(m) == blk
    check(c.wcfs_mapping_remmap_blk(m, blk))
    cdef const unsigned char *p = c.wcfs_mapping_mem_start(m)
    cdef const unsigned char *q = c.wcfs_mapping_mem_stop(m)
    with nogil:
        pass  # the API is declared nogil
    data = p[:q - p]
    check(c.wcfs_mapping_unmap(m))
    check(c.wcfs_fileh_close(fh))
    check(c.wcfs_conn_close(conn))
    cdef c.wcfs_tid head
    check(c.wcfs_head_at(wc, &head))
    check(c.wcfs_close(wc))
    return mp, bs, head, data
'''


@pytest.fixture(scope='module')
def ext(tmp_path_factory):
    d = tmp_path_factory.mktemp('cyext')
    pyx = d / 'wcfs_cyext.pyx'
    pyx.write_text(EXT)
    csrc = d / 'wcfs_cyext.c'
    subprocess.run([sys.executable, '-m', 'cython', '-I', PYDIR, str(pyx), '-o', str(csrc)], check=True)
    so = d / ('wcfs_cyext' + sysconfig.get_config_var('EXT_SUFFIX'))
    libdir = os.path.dirname(os.path.abspath(wcfs.library_path))
    cc = os.environ.get('CC', 'cc')
    subprocess.run([cc, '-shared', '-fPIC', '-O1', '-Wall', '-I', sysconfig.get_paths()['include'],
                    '-I', INCLUDE, str(csrc), '-o', str(so), '-L', libdir, '-lwcfs',
                    '-Wl,-rpath,' + libdir], check=True)
    spec = importlib.util.spec_from_file_location('wcfs_cyext', so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cython_version_and_errors(ext):
    assert ext.version() == wcfs.version()
    rcs, vals, msg, einval = ext.errors()
    assert rcs == [-einval] * len(rcs)
    assert vals == [True, 0, 0, 0, True, True, 0]
    assert msg.startswith('wcfs_mapping_mem_stop: ')


def test_cython_reads_through_mapping(ext, zenv):
    oid = int.from_bytes(zenv.f._p_oid, 'big')
    zenv.f.setblk(2, b'new' * 1000)
    at1 = zenv.commit()
    mp, bs, head, data = ext.read_blocks(zenv.mnt, oid, zenv.at0, 1, 3)
    assert os.path.samefile(mp, zenv.mnt)
    assert (bs, head) == (4096, at1)
    assert data == b''.join(zenv.content(zenv.f, zenv.at0)[4096 * k:4096 * (k + 1)] for k in (1, 2, 3))
    _, _, _, data = ext.read_blocks(zenv.mnt, oid, at1, 0, 4)
    assert data == zenv.content(zenv.f, at1)
