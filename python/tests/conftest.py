"""Fixtures of the wcfs Python tests: a data.fs written by Python ZODB in this
very process (the oracle: historical connections give the content at any
tid) and a real wcfsd serving it on a temporary mountpoint.

wcfsd is ``$WCFSD`` or ``<cargo target dir>/release/wcfsd`` (``cargo build
--release`` makes it); libwcfs is found as the ``wcfs`` package documents.
"""
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYDIR)
sys.path.insert(0, PYDIR)
sys.path.insert(0, os.path.join(PYDIR, 'wcfs_testdata'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import p64, u64  # noqa: E402

from wendelin.bigfile.file_zodb import ZBigFile  # noqa: E402


def target_dir():
    return os.environ.get('CARGO_TARGET_DIR') or os.path.join(REPO, 'target')


def wcfsd_bin():
    path = os.environ.get('WCFSD') or os.path.join(target_dir(), 'release', 'wcfsd')
    if not os.path.exists(path):
        pytest.fail('wcfsd not found at %s: run `cargo build --release -p wcfsd` or set $WCFSD' % path)
    return path


def _die_with_parent():
    # The daemon is killed if this test process dies without its teardown
    # (a test that crashes by a signal), instead of serving on forever.
    import ctypes
    PR_SET_PDEATHSIG, SIGKILL = 1, 9
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, SIGKILL)


def is_mounted(path):
    real = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        return any(line.split(' ')[4] == real for line in f)


class ZEnv:
    """A data.fs, this process's ZODB connection to it, and a wcfsd serving it."""

    def __init__(self, tmpdir):
        self.dir = str(tmpdir)
        self.datafs = os.path.join(self.dir, 'data.fs')
        self.zurl = 'file://' + self.datafs
        self.db = ZODB.DB(FileStorage(self.datafs))
        self.zconn = self.db.open()
        self.root = self.zconn.root()
        self.mnt = os.path.join(self.dir, 'mnt')
        os.mkdir(self.mnt)
        self.proc = None

    def new_file(self, blksize):
        f = ZBigFile(blksize)
        self.root['file-%d' % len(self.root)] = f
        self.zconn.add(f)
        return f

    def commit(self):
        """Commits, waits until wcfsd's head/ shows it; returns the tid (int)."""
        transaction.commit()
        tid = u64(self.db.lastTransaction())
        if self.proc is not None:
            self.wait_head(tid)
        return tid

    def head(self):
        with open(os.path.join(self.mnt, 'head', 'at')) as f:
            return int(f.read().strip(), 16)

    def wait_head(self, tid):
        deadline = time.time() + 20
        while self.head() < tid:
            assert time.time() < deadline, 'head/at stuck below %016x:\n%s' % (tid, self.log())
            time.sleep(0.005)

    def stats(self):
        """.wcfs/stats as {name: int}."""
        with open(os.path.join(self.mnt, '.wcfs', 'stats')) as f:
            return {k.strip(): int(v) for k, v in (line.split(':') for line in f if ':' in line)}

    def content(self, f, at):
        """File `f` as Python ZODB sees it at tid `at`: bytes of its size."""
        conn = self.db.open(at=p64(at))
        try:
            hf = conn.get(f._p_oid)
            bs = hf.blksize
            return b''.join(hf.readblk(blk) for blk in range(hf.size() // bs))
        finally:
            conn.close()

    def start(self, *args):
        log = open(os.path.join(self.dir, 'wcfsd.log'), 'wb')
        self.proc = subprocess.Popen([wcfsd_bin(), *args, self.zurl, self.mnt],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     preexec_fn=_die_with_parent)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                pytest.fail('wcfsd exited (%s):\n%s' % (self.proc.returncode, self.log()))
            try:
                with open(os.path.join(self.mnt, '.wcfs', 'zurl')) as f:
                    if f.read() == self.zurl:
                        return
            except OSError:
                pass
            assert time.time() < deadline, 'wcfsd not ready after 20s:\n' + self.log()
            time.sleep(0.02)

    def log(self):
        try:
            with open(os.path.join(self.dir, 'wcfsd.log'), errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def close(self):
        if self.proc is not None:
            # Killed outright, as the Rust tests' harness does: how the daemon
            # shuts down is not what these tests are about.
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if is_mounted(self.mnt):
            subprocess.run(['fusermount3', '-u', '-z', '-q', self.mnt], stderr=subprocess.DEVNULL)
        transaction.abort()
        self.zconn.close()
        self.db.close()


@pytest.fixture
def zenv(tmp_path):
    """A ZEnv with one file `zenv.f` (4 blocks of 4096, block k filled with
    k+1) committed, and wcfsd serving it."""
    env = ZEnv(tmp_path)
    try:
        env.f = env.new_file(4096)
        for blk in range(4):
            env.f.setblk(blk, bytes([blk + 1]) * 4096)
        env.at0 = env.commit()
        env.start()
        yield env
    finally:
        env.close()
