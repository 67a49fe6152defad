"""The installed wcfs wheel on its own. packaging/test runs this with the
python of a fresh venv where only the wheel is installed, in isolated mode
(-I), from a copy outside the repository, with no WCFS_* variables and no
cargo target directory to fall back on:

    wheel_check.py DBDIR CYEXT_DIR COMMIT...

DBDIR is make_db.py's output (its first transaction); CYEXT_DIR holds
wcfs_cyext, a Cython extension built against the installed package, or
is "-" where none can be built (the old-glibc root of packaging/test has
no compiler: that check is then skipped, and said so);
COMMIT is the command that commits make_db.py's second transaction (with
Python ZODB, which this venv does not have). Checks: the package, its
library and daemon come from the venv; the metadata (numpy optional);
join with autostart starts the bundled wcfsd, and what it maps is exact
against Python ZODB — a view of at1 stays at1 when head moves on, a
second view shows head, resync moves the first there; the Cython extension works;
`python -m wcfs status|stop|start|serve` are wcfsd's (same output and exit
status); `python -m wcfs wendelin install|restore` puts the bundled wcfsd in
a wendelin.core package tree and takes it out; nothing is left running or mounted. Prints one line per check and
"wheel: N passed, 0 failed".
"""
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import time

passed = 0


def ok(what):
    global passed
    passed += 1
    print('wheel: ok: ' + what, flush=True)


def run(*args):
    """(exit status, stdout) of a command; its stderr is shown if it fails."""
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120)
    if p.returncode not in (0, 3):  # 3: `status` of a zurl nobody serves
        sys.stderr.write('%s: exit status %d\n%s' % (' '.join(args), p.returncode, p.stderr))
    return p.returncode, p.stdout


def wcfs_m(*args):
    return run(sys.executable, '-I', '-m', 'wcfs', *args)


def mounted(path):
    with open('/proc/self/mountinfo') as f:
        return any(line.split(' ')[4] == path for line in f)


def main():
    dbdir, cyext_dir, commit = sys.argv[1], sys.argv[2], sys.argv[3:]
    oid, at1 = (dbenv(dbdir)[k] for k in ('OID', 'AT1'))
    zurl = 'file://' + os.path.join(dbdir, 'data.fs')
    assert not [k for k in os.environ if k.startswith('WCFS_')], 'WCFS_* variables set'

    import wcfs
    pkg = os.path.dirname(os.path.abspath(wcfs.__file__))
    wcfsd = os.path.join(pkg, 'wcfsd')
    assert pkg.startswith(os.path.realpath(sys.prefix) + os.sep) or pkg.startswith(sys.prefix + os.sep), \
        'wcfs imported from %s, not from the venv %s' % (pkg, sys.prefix)
    assert wcfs.library_path == os.path.join(pkg, 'libwcfs.so.0'), wcfs.library_path
    assert os.access(wcfsd, os.X_OK), wcfsd + ' not executable'
    assert os.path.isfile(os.path.join(pkg, 'wcfs.pxd'))
    assert os.path.isfile(os.path.join(wcfs.get_include(), 'wcfs.h'))
    assert wcfs.get_include() == os.path.join(pkg, 'include')
    ok('package, libwcfs.so.0, wcfsd, wcfs.pxd and wcfs.h from the venv (%s)' % pkg)

    md = importlib.metadata.metadata('wcfs')
    assert md['Version'] == wcfs.version(), (md['Version'], wcfs.version())
    assert md.get_all('Provides-Extra') == ['numpy'], md.get_all('Provides-Extra')
    assert importlib.metadata.requires('wcfs') == ['numpy; extra == "numpy"']
    assert importlib.util.find_spec('numpy') is None, 'numpy installed, but was not asked for'
    ok('metadata: version %s, numpy an optional extra (not installed, not needed)' % md['Version'])

    rc, out = wcfs_m('-version')
    assert rc == 0 and out.splitlines()[0] == 'wcfsd ' + wcfs.version(), (rc, out)
    assert (rc, out) == run(wcfsd, '-version')
    rc, out = wcfs_m('status', zurl)
    assert rc == 3 and out == '%s: not running (nothing mounted at %s)\n' % (
        zurl, os.path.join('/dev/shm/wcfs', mountpoint_name(zurl))), (rc, out)
    assert (rc, out) == run(wcfsd, 'status', zurl)
    ok('python -m wcfs -version / status (not running, 3): the bundled wcfsd\'s output and status')

    wc = wcfs.join(zurl, autostart=True)
    mnt = wc.mountpoint
    rc, out = wcfs_m('status', zurl)
    assert rc == 0 and ': healthy: served at ' + mnt in out, (rc, out)
    assert (rc, out) == run(wcfsd, 'status', zurl)
    pid = int(re.search(r'\(pid (\d+)\)', out).group(1))
    exe = os.readlink('/proc/%d/exe' % pid)
    assert exe == os.path.realpath(wcfsd), 'join started %s, not the bundled %s' % (exe, wcfsd)
    assert wc.head_at() == at1
    ok('join(autostart=True) started the bundled wcfsd (pid %d)' % pid)

    conn1 = wc.connect(at1)
    m1 = conn1.open(oid).mmap(0, 6)
    expect(dbdir, m1, 'at1')
    subprocess.run(commit, check=True, stdout=subprocess.DEVNULL, timeout=120)
    head = dbenv(dbdir)['HEAD']
    deadline = time.time() + 30
    while wc.head_at() != head:
        assert time.time() < deadline, 'head/at stuck at %016x, want %016x' % (wc.head_at(), head)
        time.sleep(0.01)
    expect(dbdir, m1, 'at1')  # blocks 1 and 3 changed at head: pinned to @at1
    conn2 = wc.connect(head)
    expect(dbdir, conn2.open(oid).mmap(0, 6), 'head')
    conn2.close()
    conn1.resync(head)
    expect(dbdir, m1, 'head')
    conn1.close()
    ok('mmap of ZBigFile %016x exact against Python ZODB: at1 before and after head moved on, '
       'head, at1 resynced to head' % oid)

    # The extension is imported in a process of its own before wcfs is: its
    # rpath, not an already loaded library, must find libwcfs.so.0.
    if cyext_dir == '-':
        print('wheel: skipped: Cython extension (none built here)', flush=True)
    else:
        code = 'import sys; sys.path.insert(0, %r); import wcfs_cyext; print(wcfs_cyext.version(), ' \
               'wcfs_cyext.head_at(%r)); assert "wcfs" not in sys.modules' % (cyext_dir, mnt)
        rc, out = run(sys.executable, '-I', '-c', code)
        assert rc == 0 and out.split() == [wcfs.version(), str(head)], (rc, out)
        ok('Cython: cimport wcfs.wcfs from the wheel; the extension reads head/at')

    wc.close()
    rc, out = wcfs_m('stop', zurl)
    assert (rc, out) == (0, '%s: stopped pid %d, unmounted %s\n' % (zurl, pid, mnt)), (rc, out)
    assert not alive(pid), 'daemon %d still alive after stop' % pid
    assert not mounted(mnt)
    rc, out = wcfs_m('status', zurl)
    assert rc == 3, (rc, out)
    ok('python -m wcfs stop: daemon gone, nothing mounted')

    rc, out = wcfs_m('start', zurl)
    assert rc == 0 and out == mnt + '\n', (rc, out)
    rc, _ = wcfs_m('stop', zurl)
    assert rc == 0 and not mounted(mnt)
    serve = subprocess.Popen([sys.executable, '-I', '-m', 'wcfs', 'serve', zurl],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while wcfs_m('status', zurl)[0] != 0:
            assert serve.poll() is None, 'serve exited with %s' % serve.returncode
            assert time.time() < deadline, 'serve not healthy after 30s'
            time.sleep(0.1)
        rc, _ = wcfs_m('stop', zurl)
        assert rc == 0 and serve.wait(timeout=15) == 0, (rc, serve.returncode)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert not mounted(mnt)
    ok('python -m wcfs start (prints the mountpoint) and serve (foreground), then stop')

    wendelin_install(wcfsd)

    print('wheel: %d passed, 0 failed' % passed)


def wendelin_install(wcfsd):
    """python -m wcfs wendelin install|restore puts the bundled wcfsd in a
    wendelin.core (a stand-in package tree, found by the interpreter given
    with --python through its PYTHONPATH; this command itself runs
    isolated) and takes it out again, leaving the tree as it was."""
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, 'wendelin', 'wcfs')
        os.makedirs(d)
        for f in (os.path.join(tmp, 'wendelin', '__init__.py'), os.path.join(d, '__init__.py')):
            open(f, 'w').close()
        shutil.copy(shutil.which('true'), os.path.join(d, 'wcfs'))
        with open(os.path.join(d, 'wcfs'), 'rb') as f:
            orig = f.read()
        env = dict(os.environ, PYTHONPATH=tmp)
        for cmd in ('install', 'restore'):
            p = subprocess.run([sys.executable, '-I', '-m', 'wcfs', 'wendelin', cmd,
                                '--python', sys.executable], env=env, universal_newlines=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            assert p.returncode == 0, (cmd, p.returncode, p.stderr)
            if cmd == 'install':
                with open(os.path.join(d, 'wcfs'), 'rb') as f, open(wcfsd, 'rb') as g:
                    assert f.read() == g.read(), 'installed wcfs is not the bundled wcfsd'
                assert ' as %s/wcfs ' % d in p.stdout, p.stdout
        with open(os.path.join(d, 'wcfs'), 'rb') as f:
            assert f.read() == orig
        assert sorted(os.listdir(d)) == ['__init__.py', 'wcfs'], os.listdir(d)
    ok('python -m wcfs wendelin install / restore: the bundled wcfsd in a wendelin.core and out')


def dbenv(dbdir):
    """make_db.py's db.env: {name: int}."""
    with open(os.path.join(dbdir, 'db.env')) as f:
        return {k: int(v, 16) for k, v in (line.strip().split('=', 1) for line in f)}


def expect(dbdir, m, name):
    """Mapping `m` shows the file as Python ZODB read it as of `name` (at1,
    head): its content, then zeros up to the end of the mapping."""
    with open(os.path.join(dbdir, name + '.bin'), 'rb') as f:
        want = f.read()
    mem = bytes(m.mem)
    assert len(mem) >= len(want)
    assert mem[:len(want)] == want, 'as of %s: the mapping differs from Python ZODB' % name
    assert mem[len(want):] == bytes(len(mem) - len(want)), 'as of %s: no zeros past the end' % name


def alive(pid):
    """Whether process `pid` runs (a zombie has ended), as lifecycle tells."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


def mountpoint_name(zurl):
    import hashlib
    return hashlib.sha1(zurl.encode()).hexdigest()


if __name__ == '__main__':
    try:
        main()
    except AssertionError as e:
        print('wheel: FAILED: %s' % (e,), file=sys.stderr)
        print('wheel: %d passed, 1 failed' % passed)
        sys.exit(1)
