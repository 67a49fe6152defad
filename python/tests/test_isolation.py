"""End-to-end isolation through the Python bindings, against a real wcfsd,
with Python ZODB committing in this process; ZODB's historical connections
are the oracle."""
import gc
import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import numpy
import pytest

import wcfs
from conftest import ZEnv

BLKSIZE = 8192
NBLK = 40

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'view_worker.py')


def seed(name):
    s = int(os.environ.get('WCFS_TEST_SEED') or random.randrange(10**6))
    print('%s: seed %d (reproduce with WCFS_TEST_SEED=%d)' % (name, s, s))
    return s


def check_view(zenv, f, m, at, when):
    """The mapping shows Python's content at `at`, zeros past its size."""
    want = zenv.content(f, at)
    mem = m.mem
    assert len(want) <= len(mem)
    if bytes(mem[:len(want)]) != want:
        for blk in range(len(want) // BLKSIZE):
            lo, hi = blk * BLKSIZE, (blk + 1) * BLKSIZE
            assert bytes(mem[lo:hi]) == want[lo:hi], '%s: block %d differs (at %016x)' % (when, blk, at)
    assert not any(mem[len(want):]), '%s: nonzero beyond EOF (size %d)' % (when, len(want))


def random_change(f, rng, step):
    op = rng.randrange(7)
    blk = rng.randrange(30)
    if op <= 1:
        f.setblk(blk, bytes([1 + step % 250]) * rng.randrange(1, BLKSIZE + 1),
                 kind=rng.choice(['zblk0', 'zblk1']))
    elif op == 2:
        f.punch(blk)
    elif op == 3:  # grow
        f.setblk(20 + rng.randrange(12), bytes([0x80 | step & 0x7f]) * 100)
    elif op == 4:  # shrink
        f.truncate(4 + rng.randrange(16))
    elif op == 5:  # many keys at once: buckets split
        for k in range(rng.randrange(10), rng.randrange(10, 35)):
            f.setblk(k, bytes([step & 0xff, k]) * (BLKSIZE // 2))
    else:  # restructure: drop a range (buckets merge)
        lo = rng.randrange(20)
        for k in list(f.blktab.keys(min=lo, max=lo + rng.randrange(3, 12))):
            del f.blktab[k]


def test_conn_keeps_its_at_through_commits_then_resyncs(zenv):
    rng = random.Random(seed('test_conn_keeps_its_at'))
    f = zenv.new_file(BLKSIZE)
    for blk in range(10):
        if blk != 6:
            f.setblk(blk, bytes([blk + 1]) * (BLKSIZE if blk != 9 else BLKSIZE // 3))
    at1 = zenv.commit()

    pins0 = zenv.stats()['pin']
    wc = wcfs.attach(zenv.mnt)
    conn = wc.connect(at1)
    fh = conn.open(f._p_oid)
    m = fh.mmap(0, NBLK)
    arr = numpy.frombuffer(m.mem, dtype=numpy.uint8)  # no copy: follows the mapping
    assert arr.ctypes.data == wcfs.ctypes.addressof(m.mem.obj)
    assert not arr.flags.writeable
    check_view(zenv, f, m, at1, 'at1')

    conn_mid = m_mid = at_mid = None
    min_head_size = f.size()  # smallest size head had during the run
    nsteps = 55
    for step in range(1, nsteps + 1):
        random_change(f, rng, step)
        tid = zenv.commit()
        min_head_size = min(min_head_size, f.size())
        check_view(zenv, f, m, at1, 'commit %d' % step)
        if m_mid is not None:
            check_view(zenv, f, m_mid, at_mid, 'commit %d (mid view)' % step)
        if step == nsteps // 2:
            at_mid = tid
            conn_mid = wc.connect(at_mid)
            m_mid = conn_mid.open(f._p_oid).mmap(0, NBLK)
            check_view(zenv, f, m_mid, at_mid, 'mid view')

    # The views were kept by pins, not, say, by reading @at1 throughout:
    # every block head had all along (below its smallest size in the run)
    # that differs from at1 was read through m after it changed, so it was
    # pinned at least once.
    at2 = wc.head_at()
    c1, c2 = zenv.content(f, at1), zenv.content(f, at2)
    changed = sum(c1[lo:lo + BLKSIZE] != c2[lo:lo + BLKSIZE]
                  for lo in range(0, min_head_size - BLKSIZE + 1, BLKSIZE))
    assert zenv.stats()['pin'] - pins0 >= changed
    conn.resync(at2)
    assert conn.at == at2
    check_view(zenv, f, m, at2, 'after resync')
    # The numpy array made before resync shows the new state: same memory.
    want2 = numpy.frombuffer(zenv.content(f, at2), dtype=numpy.uint8)
    assert numpy.array_equal(arr[:len(want2)], want2)
    check_view(zenv, f, m_mid, at_mid, 'mid view after resync of the other')

    with pytest.raises(OSError):
        conn.resync(at1)  # backwards: the Conn goes down
    del arr
    conn_mid.close()
    conn.close()
    wc.close()
    gc.collect()


def test_memory_faults_after_close(zenv):
    wc = wcfs.attach(zenv.mnt)
    conn = wc.connect(wc.head_at())
    m = conn.open(zenv.f._p_oid).mmap(0, 4)
    assert m.mem[0] == 1
    view = m.mem
    conn.close()
    pid = os.fork()
    if pid == 0:  # the child touches memory of a closed Conn
        try:
            import faulthandler
            faulthandler.disable()  # the fault is expected: no dump
            os.write(1, b'read %d\n' % view[0])
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGSEGV, signal.SIGBUS), status
    wc.close()


def sha(data):
    return hashlib.sha1(data).hexdigest()


def test_several_processes_at_different_at(zenv):
    """Workers in other processes each hold a view at their own `at` while
    this process commits on; each then reports what its memory shows."""
    rng = random.Random(seed('test_several_processes'))
    f = zenv.new_file(BLKSIZE)
    ats, workers = [], []
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(wcfs.__file__)))
    try:
        for i in range(4):
            for blk in range(8 + 2 * i):
                f.setblk(blk, bytes([16 * i + blk]) * BLKSIZE)
            at = zenv.commit()
            ats.append(at)
            w = subprocess.Popen(
                [sys.executable, WORKER, zenv.mnt, f._p_oid.hex(), '%016x' % at, str(NBLK)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
            workers.append(w)
            assert w.stdout.readline().strip() == 'ready', 'worker %d did not get ready' % i
        for step in range(20):
            random_change(f, rng, step + 100)
            zenv.commit()
        for i, (w, at) in enumerate(zip(workers, ats)):
            want = zenv.content(f, at)
            w.stdin.write('check\n')
            w.stdin.flush()
            got = w.stdout.readline().split()
            assert got == ['view', str(len(want)), sha(want)], 'worker %d at %016x' % (i, at)
    finally:
        for w in workers:
            try:
                w.stdin.close()
            except OSError:
                pass
            w.wait(30)
    assert all(w.returncode == 0 for w in workers)


def test_client_dying_in_a_pin_does_not_hurt_others(tmp_path):
    """A client that stops answering (SIGSTOP) and is then killed while the
    daemon waits for its ack does not make us wait past the pin timeout,
    nor see wrong data; the daemon keeps serving afterwards."""
    pintimeout = 3
    env = ZEnv(tmp_path)
    w = None
    try:
        f = env.new_file(BLKSIZE)
        for blk in range(4):
            f.setblk(blk, bytes([blk + 1]) * BLKSIZE)
        at1 = env.commit()
        env.start('-pintimeout', '%ds' % pintimeout)
        w = subprocess.Popen(
            [sys.executable, WORKER, env.mnt, f._p_oid.hex(), '%016x' % at1, '4'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(wcfs.__file__))))
        assert w.stdout.readline().strip() == 'ready'
        w.stdin.write('check\n')  # it reads every block through its mapping
        w.stdin.flush()
        want1 = env.content(f, at1)
        assert w.stdout.readline().split() == ['view', str(len(want1)), sha(want1)]
        os.kill(w.pid, signal.SIGSTOP)  # its pinner cannot answer any more

        wc = wcfs.attach(env.mnt)
        conn = wc.connect(at1)
        m = conn.open(f._p_oid).mmap(0, 4)
        assert bytes(m.mem) == want1
        f.setblk(1, b'\xee' * BLKSIZE)
        at2 = env.commit()
        # Our read of block 1 makes the daemon pin both views at at1; the
        # stopped client dies while the daemon waits for its ack.
        killer = subprocess.Popen(['sh', '-c', 'sleep 1; kill -9 %d' % w.pid])
        t0 = time.monotonic()
        got = bytes(m.mem)
        elapsed = time.monotonic() - t0
        killer.wait()
        assert got == want1
        assert elapsed < pintimeout + 2, 'waited %.1fs for a dead client' % elapsed
        assert w.wait(10) == -signal.SIGKILL

        conn2 = wc.connect(at2)
        m2 = conn2.open(f._p_oid).mmap(0, 4)
        assert bytes(m2.mem) == env.content(f, at2)
        assert bytes(m.mem) == want1
        conn2.close()
        conn.close()
        wc.close()
    finally:
        if w is not None and w.poll() is None:
            w.kill()
            w.wait()
        env.close()


def test_forked_child_is_detached(zenv):
    """A forked child's handles answer ENOTCONN and its memory keeps the view;
    the parent's Conn keeps working (its pins are still answered)."""
    import errno
    wc = wcfs.attach(zenv.mnt)
    conn = wc.connect(zenv.at0)
    m = conn.open(zenv.f._p_oid).mmap(0, 4)
    want = zenv.content(zenv.f, zenv.at0)
    assert bytes(m.mem) == want
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                conn.open(zenv.f._p_oid)
                code = 3
            except OSError as e:
                code = 4 if e.errno != errno.ENOTCONN else 5 if bytes(m.mem) != want else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    zenv.f.setblk(0, b'\xaa' * 4096)
    at1 = zenv.commit()
    assert bytes(m.mem) == want
    assert bytes(wc.connect(at1).open(zenv.f._p_oid).mmap(0, 4).mem) == zenv.content(zenv.f, at1)
    conn.close()
    wc.close()
