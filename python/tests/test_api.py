"""The wcfs package's API: library loading, id conversion, errors as
OSError, handle lifecycle (released once, parents first, wrong arguments)."""
import errno
import os
import re

import pytest

import wcfs


def test_library_and_version():
    assert os.path.exists(wcfs.library_path) or '/' not in wcfs.library_path
    assert re.fullmatch(r'\d+\.\d+\.\d+', wcfs.version())
    with open(os.path.join(os.path.dirname(wcfs.__file__), '..', '..', 'Cargo.toml')) as f:
        m = re.search(r'^version = "([^"]+)"', f.read(), re.M)
    assert wcfs.version() == m.group(1)


def test_soversion_is_the_abi_version():
    with open(os.path.join(os.path.dirname(wcfs.__file__), '..', '..', 'include', 'wcfs.h')) as f:
        m = re.search(r'^#define WCFS_ABI_VERSION (\d+)$', f.read(), re.M)
    assert m, 'no WCFS_ABI_VERSION in include/wcfs.h'
    assert wcfs._SOVERSION == int(m.group(1))


def test_ids_as_int_or_bytes():
    assert wcfs._id(5, 'at') == 5
    assert wcfs._id(b'\x00' * 7 + b'\x05', 'at') == 5
    assert wcfs._id(b'\x03\xfa' + b'\x00' * 6, 'oid') == 0x03fa << 48
    assert wcfs._id(2**64 - 1, 'at') == 2**64 - 1
    for bad, exc in [(b'\x00' * 7, ValueError), (b'\x00' * 9, ValueError), (-1, ValueError),
                     (2**64, ValueError), (True, TypeError), ('0000000000000005', TypeError),
                     (5.0, TypeError)]:
        with pytest.raises(exc):
            wcfs._id(bad, 'at')


def test_errors_are_oserror_with_errno_and_message(tmp_path):
    with pytest.raises(OSError) as e:
        wcfs.attach('')
    assert e.value.errno == errno.EINVAL
    assert 'wcfs_attach' in e.value.strerror
    # No daemon there: some errno, and a message.
    with pytest.raises(OSError) as e:
        wcfs.attach(str(tmp_path))
    assert e.value.errno and e.value.strerror.startswith('wcfs_attach: ')
    with pytest.raises(OSError) as e:
        wcfs.attach('/nonexistent/wcfs')
    assert e.value.errno
    assert wcfs._live_handles() == 0


def test_handle_lifecycle(zenv):
    wc = wcfs.attach(zenv.mnt)
    assert os.path.samefile(wc.mountpoint, zenv.mnt)
    head = wc.head_at()
    assert head == zenv.at0
    conn = wc.connect(head)
    assert conn.at == head
    # oids and tids as ZODB's own 8-byte form
    conn2 = wc.connect(zenv.f._p_serial)
    assert conn2.at == head
    fh = conn.open(zenv.f._p_oid)
    assert fh.blksize == 4096 and fh.oid == int.from_bytes(zenv.f._p_oid, 'big')
    for start, n in [(-1, 1), (0, 0), (0, -2)]:
        with pytest.raises(OSError) as e:
            fh.mmap(start, n)
        assert e.value.errno == errno.EINVAL
    m = fh.mmap(1, 2)
    assert m.blk_start == 1
    assert len(m.mem) == 2 * 4096 and m.mem.readonly
    assert bytes(m.mem[:4096]) == b'\x02' * 4096 and bytes(m.mem[4096:]) == b'\x03' * 4096
    with pytest.raises(TypeError):
        m.mem[0] = 1
    m.remmap_blk(2)
    with pytest.raises(OSError) as e:
        m.remmap_blk(5)
    assert e.value.errno == errno.EINVAL
    assert bytes(m.mem[4096:]) == b'\x03' * 4096

    # an oid that is not a ZBigFile
    with pytest.raises(OSError):
        conn.open(0)

    # released exactly once
    m.unmap()
    with pytest.raises(OSError) as e:
        m.unmap()
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        m.blk_start
    fh.close()
    with pytest.raises(OSError):
        fh.mmap(0, 1)

    # parents first: children answer ENOTCONN until released
    fh2 = conn2.open(zenv.f._p_oid)
    m2 = fh2.mmap(0, 4)
    wc.close()
    with pytest.raises(OSError) as e:
        conn2.open(zenv.f._p_oid)
    assert e.value.errno == errno.ENOTCONN
    conn2.close()
    with pytest.raises(OSError) as e:
        m2.remmap_blk(0)
    assert e.value.errno == errno.ENOTCONN
    for close in (m2.unmap, fh2.close, conn.close):
        try:
            close()
        except OSError as e:
            assert e.errno == errno.ENOTCONN
    assert wcfs._live_handles() == 0


def test_context_managers_and_gc_release(zenv):
    with wcfs.attach(zenv.mnt) as wc, wc.connect(wc.head_at()) as conn:
        with conn.open(zenv.f._p_oid) as fh, fh.mmap(0, 4) as m:
            assert bytes(m.mem[3 * 4096:]) == b'\x04' * 4096
        fh = conn.open(zenv.f._p_oid)
        m = fh.mmap(0, 1)
        assert wcfs._live_handles() == 4
        del m, fh
        import gc
        gc.collect()
        assert wcfs._live_handles() == 2
    assert wcfs._live_handles() == 0


def test_chained_views_keep_their_parents(zenv):
    m = wcfs.attach(zenv.mnt).connect(zenv.at0).open(zenv.f._p_oid).mmap(0, 4)
    import gc
    gc.collect()
    assert wcfs._live_handles() == 4
    assert bytes(m.mem[:4096]) == b'\x01' * 4096
    del m
    gc.collect()
    assert wcfs._live_handles() == 0


def test_join_starts_the_daemon_of_a_zurl(zenv, monkeypatch):
    """join(zurl, autostart=True) serves the zurl at /dev/shm/wcfs/<sha1>
    (a second daemon beside the fixture's, on the same data.fs)."""
    import hashlib
    import subprocess
    from conftest import wcfsd_bin
    monkeypatch.setenv('WCFS_WCFSD', wcfsd_bin())
    zurl = zenv.zurl
    with pytest.raises(OSError):
        wcfs.join('file://' + os.path.join(zenv.dir, 'nothing-serves-this.fs'), autostart=False)
    try:
        wc = wcfs.join(zurl, autostart=True)
        assert wc.mountpoint == '/dev/shm/wcfs/' + hashlib.sha1(zurl.encode()).hexdigest()
        assert wc.head_at() == zenv.at0
        m = wc.connect(zenv.at0).open(zenv.f._p_oid).mmap(0, 4)
        assert bytes(m.mem) == zenv.content(zenv.f, zenv.at0)
        wc2 = wcfs.join(zurl)  # now served: no autostart needed
        assert wc2.mountpoint == wc.mountpoint
        wc2.close()
        m.unmap()
        del m
        wc.close()
    finally:
        subprocess.run([wcfsd_bin(), 'stop', zurl], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mnt = '/dev/shm/wcfs/' + hashlib.sha1(zurl.encode()).hexdigest()
        for leftover in (mnt + '.lock', mnt + '.log'):
            if os.path.exists(leftover):
                os.unlink(leftover)
        if os.path.isdir(mnt) and not os.path.ismount(mnt):
            os.rmdir(mnt)


def test_close_is_synchronous_unmount_at_once(zenv):
    """When the closes return, nothing of this process holds the mount: no
    descriptor, no mapping of its files, no pinner thread; a plain (not
    lazy) unmount right after succeeds — round after round, with a new
    daemon each time."""
    import subprocess

    def tasks():
        return len(os.listdir('/proc/self/task'))

    def held():
        mnt = os.path.realpath(zenv.mnt)
        fds = []
        for fd in os.listdir('/proc/self/fd'):
            try:
                target = os.readlink('/proc/self/fd/' + fd)
            except OSError:
                continue
            if target == mnt or target.startswith(mnt + '/'):
                fds.append(target)
        with open('/proc/self/maps') as f:
            maps = [line for line in f if mnt in line]
        return fds + maps

    base = tasks()
    for rnd in range(20):
        with wcfs.attach(zenv.mnt) as wc, wc.connect(wc.head_at()) as conn:
            with conn.open(zenv.f._p_oid) as fh, fh.mmap(0, 4) as m:
                assert bytes(m.mem[3 * 4096:]) == b'\x04' * 4096
                assert tasks() > base  # the pinner
        assert wcfs._live_handles() == 0
        assert held() == [], 'round %d: %r' % (rnd, held())
        assert tasks() == base, 'round %d: threads left' % rnd
        r = subprocess.run(['fusermount3', '-u', zenv.mnt], capture_output=True, text=True)
        assert r.returncode == 0, 'round %d: unmount right after close: %s' % (rnd, r.stderr)
        assert zenv.proc.wait(timeout=20) == 0, zenv.log()
        zenv.proc = None
        zenv.start()
