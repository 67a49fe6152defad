"""``python -m wcfs wendelin install|restore|status`` (wcfs/_wendelin.py)
on a stand-in wendelin.core: a package tree ``wendelin/wcfs/`` on
PYTHONPATH with an "upstream server" ``wcfs`` in it (a copy of
``sleep``, so that a server can be running from it). The command itself is
real: it asks a real interpreter where wendelin.wcfs is and really swaps
the files. That upstream's own client and suites then run on the wcfsd
installed this way is checked by dev/upstream-suites (./run-tests).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from wcfs import __main__ as main

PYDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Tree:
    def __init__(self, tmp_path, server=True):
        self.site = tmp_path / 'site'
        self.dir = self.site / 'wendelin' / 'wcfs'
        self.dir.mkdir(parents=True)
        (self.site / 'wendelin' / '__init__.py').write_text('')
        (self.dir / '__init__.py').write_text('raise ImportError("must not be imported")\n')
        if server:
            shutil.copy2(shutil.which('sleep'), str(self.dir / 'wcfs'))
            os.chmod(str(self.dir / 'wcfs'), 0o751)
        self.listing = self.snapshot()

    def snapshot(self):
        """name → (inode, mode, content) of every file in the directory."""
        out = {}
        for name in os.listdir(str(self.dir)):
            p = self.dir / name
            st = os.lstat(str(p))
            out[name] = (st.st_ino, st.st_mode, p.read_bytes())
        return out

    def env(self, **kw):
        env = {k: v for k, v in os.environ.items() if k != 'WCFS_WCFSD'}
        env['PYTHONPATH'] = os.pathsep.join([str(self.site), PYDIR])
        env.update(kw)
        return env

    def run(self, *args, **env):
        p = subprocess.run([sys.executable, '-m', 'wcfs', 'wendelin'] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, env=self.env(**env))
        return p.returncode, p.stdout, p.stderr


def wcfsd_bytes():
    with open(main.wcfsd_path(), 'rb') as f:
        return f.read()


def test_install_restore_roundtrip(tmp_path):
    t = Tree(tmp_path)
    orig = t.listing['wcfs']
    assert t.run('status')[0] == 1

    rc, out, err = t.run('install')
    assert (rc, err) == (0, ''), err
    assert 'original server kept as %s/wcfs.orig' % t.dir in out
    server = t.dir / 'wcfs'
    assert server.read_bytes() == wcfsd_bytes()
    assert os.stat(str(server)).st_mode & 0o777 == 0o755
    assert not server.is_symlink()
    # The original is kept as the very same file (inode, mode, content).
    assert t.snapshot()['wcfs.orig'] == orig
    assert set(t.snapshot()) == {'__init__.py', 'wcfs', 'wcfs.orig', '.wcfsd-install.json'}
    rc, out, _ = t.run('status')
    assert rc == 0 and 'wcfsd ' in out
    # It is a wcfsd that runs.
    v = subprocess.run([str(server), '-version'], stdout=subprocess.PIPE, check=True)
    assert v.stdout.startswith(b'wcfsd ')

    # Twice: nothing changes, the original stays.
    before = t.snapshot()
    rc, out, err = t.run('install')
    assert (rc, err) == (0, '') and 'already installed, up to date' in out
    assert t.snapshot() == before

    rc, out, err = t.run('restore')
    assert (rc, err) == (0, ''), err
    assert 'put the original server back' in out
    assert t.snapshot() == t.listing     # exactly: same inode, mode, content; nothing left
    assert t.run('status')[0] == 1

    rc, out, err = t.run('restore')
    assert (rc, err) == (0, '')
    assert out == 'python -m wcfs wendelin: nothing to restore: no wcfsd installed in %s\n' % t.dir
    assert t.snapshot() == t.listing


def test_no_original_server(tmp_path):
    t = Tree(tmp_path, server=False)
    rc, out, err = t.run('install')
    assert rc == 0, err
    assert 'there was no server there' in out
    assert (t.dir / 'wcfs').read_bytes() == wcfsd_bytes()
    rc, out, err = t.run('restore')
    assert rc == 0, err
    assert 'removed wcfsd' in out
    assert t.snapshot() == t.listing


def test_update_replaces_only_wcfsd(tmp_path):
    """install with another wcfsd: updated; the original is still upstream's."""
    t = Tree(tmp_path)
    other = tmp_path / 'wcfsd'
    shutil.copy2(main.wcfsd_path(), str(other))
    with open(str(other), 'ab') as f:
        f.write(b'\0')  # another build: other bytes, still runs
    assert t.run('install')[0] == 0
    rc, out, err = t.run('install', '--wcfsd', str(other))
    assert rc == 0, err
    assert 'updated the wcfsd installed before' in out
    assert (t.dir / 'wcfs').read_bytes() == other.read_bytes()
    assert t.run('restore')[0] == 0
    assert t.snapshot() == t.listing


def test_reinstalled_wendelin(tmp_path):
    """A server put in place since the install (wendelin.core reinstalled)
    is never taken for ours: restore leaves it; install keeps it as the
    original."""
    t = Tree(tmp_path)
    assert t.run('install')[0] == 0
    new = t.dir / 'wcfs.tmp'
    new.write_bytes(b'#!/bin/sh\necho new upstream server\n')
    os.rename(str(new), str(t.dir / 'wcfs'))
    before = t.snapshot()
    rc, out, err = t.run('restore')
    assert rc == 1 and out == ''
    assert 'is not the wcfsd installed there' in err
    assert t.snapshot() == before
    assert t.run('status')[0] == 1

    rc, out, err = t.run('install')
    assert rc == 0, err
    assert 'replaced since the last install' in out
    assert (t.dir / 'wcfs.orig').read_bytes() == before['wcfs'][2]
    assert t.run('restore')[0] == 0
    assert t.snapshot()['wcfs'] == before['wcfs']
    assert set(t.snapshot()) == {'__init__.py', 'wcfs'}


def test_running_server_still_recognized(tmp_path):
    """A server running from the replaced binary: its exe becomes
    '<dir>/wcfs (deleted)', which upstream's _lookup_wcsrv accepts; new
    starts run wcfsd. Both ways."""
    t = Tree(tmp_path)
    server = str(t.dir / 'wcfs')
    old = subprocess.Popen([server, '1000'])
    try:
        assert t.run('install')[0] == 0
        assert os.readlink('/proc/%d/exe' % old.pid) == server + ' (deleted)'
        with open('/proc/%d/comm' % old.pid) as f:
            assert f.read().strip() == 'wcfs'
    finally:
        old.kill()
        old.wait()
    assert t.run('restore')[0] == 0
    assert t.snapshot() == t.listing


def test_errors(tmp_path):
    t = Tree(tmp_path)
    # No wendelin.core for PY.
    rc, out, err = t.run('install', PYTHONPATH=PYDIR)
    assert (rc, out) == (1, '')
    assert err.startswith('python -m wcfs wendelin install: %s has no wendelin.core with '
                          'wendelin.wcfs (ModuleNotFoundError: ' % sys.executable), err
    rc, out, err = t.run('restore', '--python', '/nonexistent/python')
    assert (rc, out) == (1, '')
    assert err == ('python -m wcfs wendelin restore: cannot run /nonexistent/python: '
                   'No such file or directory\n')
    # No wcfsd.
    rc, out, err = t.run('install', WCFS_WCFSD='/nonexistent/wcfsd')
    assert (rc, out) == (1, '')
    assert err == ('python -m wcfs wendelin install: no wcfsd found (give one with '
                   '--wcfsd PATH); tried: /nonexistent/wcfsd\n')
    # Not a wcfsd.
    rc, out, err = t.run('install', '--wcfsd', shutil.which('true'))
    assert rc == 1 and 'is not a wcfsd' in err
    # A leftover wcfs.orig with no record: not overwritten.
    (t.dir / 'wcfs.orig').write_bytes(b'something')
    rc, out, err = t.run('install')
    assert rc == 1 and 'no install is recorded' in err
    assert (t.dir / 'wcfs.orig').read_bytes() == b'something'
    os.unlink(str(t.dir / 'wcfs.orig'))
    assert t.snapshot() == t.listing


@pytest.mark.skipif(os.geteuid() != 0, reason='a read-only bind mount needs root')
def test_not_writable(tmp_path):
    t = Tree(tmp_path)
    d = str(t.dir)
    try:
        subprocess.run(['mount', '--bind', d, d], check=True)
        subprocess.run(['mount', '-o', 'remount,bind,ro', d], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        subprocess.run(['umount', d])
        pytest.skip('cannot make a read-only bind mount here: %s' % e)
    try:
        rc, out, err = t.run('install')
    finally:
        subprocess.run(['umount', d], check=True)
    assert (rc, out) == (1, '')
    assert err == ('python -m wcfs wendelin install: %s: cannot write there (Read-only file '
                   'system): run this as the owner of that wendelin.core installation\n' % d)
    assert t.snapshot() == t.listing


def test_state_record(tmp_path):
    t = Tree(tmp_path)
    assert t.run('install')[0] == 0
    with open(str(t.dir / '.wcfsd-install.json')) as f:
        st = json.load(f)
    assert st['original'] is True
    assert st['wcfsd'] == os.path.abspath(main.wcfsd_path())
    assert st['wcfsd_version'].startswith('wcfsd ')
    (t.dir / '.wcfsd-install.json').write_text('{')
    rc, out, err = t.run('restore')
    assert rc == 1 and 'unreadable' in err
