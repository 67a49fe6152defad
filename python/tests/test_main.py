"""``python -m wcfs`` (wcfs/__main__.py) is wcfsd: the same output and exit
status for every verb, from the wcfsd that join(autostart) would start —
here, in the source tree, the one beside the loaded libwcfs.so. (The
installed wheel is checked the same way by packaging/test.)"""
import hashlib
import os
import subprocess
import sys

import wcfs
from wcfs import __main__ as main

PYDIR = os.path.dirname(os.path.dirname(os.path.abspath(wcfs.__file__)))


def run(*args, env=None):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, cwd=PYDIR, env=env)
    return p.returncode, p.stdout, p.stderr


def test_wcfsd_is_the_one_beside_the_library():
    env = {k: v for k, v in os.environ.items() if k != 'WCFS_WCFSD'}
    rc, out, _ = run(sys.executable, '-c', 'from wcfs import __main__ as m; print(m.wcfsd_path())',
                     env=env)
    assert rc == 0
    assert out.strip() == os.path.join(os.path.dirname(os.path.abspath(wcfs.library_path)), 'wcfsd')


def test_same_output_and_status_as_wcfsd(tmp_path):
    wcfsd = main.wcfsd_path()
    zurl = 'file://%s/data.fs' % tmp_path  # nobody serves it
    try:
        for args, status in [(['-version'], 0), (['status', zurl], 3), (['stop', zurl], 0),
                             (['status'], 2), (['-nosuchflag'], 2)]:
            have = run(sys.executable, '-m', 'wcfs', *args)
            assert have[0] == status, (args, have)
            assert have == run(wcfsd, *args), args
    finally:
        # stop takes the zurl's lock: leave nothing of ours in /dev/shm/wcfs.
        lock = '/dev/shm/wcfs/%s.lock' % hashlib.sha1(zurl.encode()).hexdigest()
        if os.path.exists(lock):
            os.unlink(lock)
    rc, out, _ = run(sys.executable, '-m', 'wcfs', '-version')
    assert out.splitlines()[0] == 'wcfsd ' + wcfs.version()


def test_no_wcfsd_is_a_clear_error():
    env = dict(os.environ, WCFS_WCFSD='/nonexistent/wcfsd')
    rc, out, err = run(sys.executable, '-m', 'wcfs', 'status', 'file:///x/data.fs', env=env)
    assert (rc, out) == (1, '')
    assert err == 'python -m wcfs: no wcfsd found; tried: /nonexistent/wcfsd\n'


def test_get_include_has_the_header():
    assert os.path.isfile(os.path.join(wcfs.get_include(), 'wcfs.h'))
