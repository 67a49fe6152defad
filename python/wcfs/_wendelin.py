"""python -m wcfs wendelin install|restore|status [--python PY] — switch a
wendelin.core installation to wcfsd, and back.

Upstream's client (``wendelin.wcfs``) starts its server from one fixed
place, ``<dir of wendelin/wcfs/__init__.py>/wcfs``, and later recognizes
the server process (to stop, kill or abort it) only by that: the process's
``/proc/<pid>/comm`` must be ``wcfs`` and its ``/proc/<pid>/exe`` exactly
that path (or that path with `` (deleted)``). So wcfsd must be a regular
file named ``wcfs`` in that directory — a symlink would not do, the kernel
resolves it for ``exe`` — and installing it means replacing upstream's
server there. ``install`` does that and ``restore`` undoes it exactly:

- The directory is the one interpreter PY (default: this one) imports
  ``wendelin.wcfs`` from: PY is asked (``importlib.util.find_spec``, which
  does not run ``wendelin.wcfs`` itself, so a half-built wendelin.core is
  still found), with this process's environment and working directory.
- The original server is kept as ``wcfs.orig`` by a hard link: the same
  inode, so ``restore`` puts back that very file (content, mode, owner),
  and a server still running from it keeps ``exe`` = ``<dir>/wcfs
  (deleted)``, which upstream's client still recognizes.
- wcfsd goes in by copy to a temporary name + rename, so the switch is
  atomic (a client starting a server sees one or the other) and a running
  old server is no obstacle (no ETXTBSY); new servers are wcfsd.
- What was installed is recorded in ``.wcfsd-install.json`` (whether there
  was an original, and the SHA-256 of the wcfsd put there): so ``install``
  again only updates wcfsd, and neither it nor ``restore`` ever takes a
  server put there by someone else (a reinstalled wendelin.core) for ours.
- Concurrent runs on one directory are serialized (flock on the
  directory).

Which wcfsd: ``--wcfsd PATH``, else the one ``python -m wcfs`` runs (the
bundled one, found as libwcfs's join finds it; ``$WCFS_WCFSD`` first).
"""
import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys

SERVER = 'wcfs'
ORIG = 'wcfs.orig'
STATE = '.wcfsd-install.json'
PROG = 'python -m wcfs wendelin'


class Error(Exception):
    """A failure explained to the user; exit status 1."""


# Run by PY: where it imports wendelin.wcfs from. Python 3 (importlib.util).
_LOCATE = r'''
import importlib.util, json, sys
try:
    s = importlib.util.find_spec("wendelin.wcfs")
except Exception as e:
    s, err = None, "%s: %s" % (type(e).__name__, e)
else:
    err = None if s is not None else "no module named 'wendelin.wcfs'"
print(json.dumps({"origin": s.origin if s is not None else None, "error": err}))
'''


def locate(python):
    """The directory of PY's wendelin/wcfs/__init__.py."""
    try:
        p = subprocess.run([python, '-c', _LOCATE], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
    except OSError as e:
        raise Error('cannot run %s: %s' % (python, e.strerror))
    try:
        found = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Error('%s could not be asked where wendelin.wcfs is (exit status %d): %s'
                    % (python, p.returncode, p.stderr.strip() or p.stdout.strip()))
    if found.get('error'):
        raise Error('%s has no wendelin.core with wendelin.wcfs (%s)'
                    % (python, found['error']))
    origin = found.get('origin') or ''
    if os.path.basename(origin) != '__init__.py':
        raise Error('%s: wendelin.wcfs is not a regular package (found at %r)'
                    % (python, origin))
    return os.path.dirname(os.path.abspath(origin))


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def wcfsd_version(path):
    """First line of ``wcfsd -version``; Error if PATH is not a wcfsd."""
    try:
        p = subprocess.run([path, '-version'], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Error('%s: cannot run it: %s' % (path, getattr(e, 'strerror', None) or e))
    line = (p.stdout.splitlines() or [''])[0]
    if p.returncode != 0 or not line.startswith('wcfsd '):
        raise Error('%s is not a wcfsd (`-version` said %r, exit status %d)'
                    % (path, line or p.stderr.strip(), p.returncode))
    return line


def find_wcfsd(explicit):
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise Error('--wcfsd %s: not an executable file' % explicit)
        return os.path.abspath(explicit)
    from wcfs import __main__ as main
    tried = []
    for path in main.wcfsd_candidates():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
        tried.append(path)
    raise Error('no wcfsd found (give one with --wcfsd PATH); tried: %s' % ', '.join(tried))


class Dir:
    """The wendelin/wcfs directory, locked for the duration of a command."""

    def __init__(self, path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise Error('%s: %s' % (path, e.strerror))
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def close(self):
        os.close(self.fd)

    def p(self, name):
        return os.path.join(self.path, name)

    def exists(self, name):
        return os.path.lexists(self.p(name))

    def sync(self):
        os.fsync(self.fd)

    def state(self):
        try:
            with open(self.p(STATE)) as f:
                st = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise Error('%s: unreadable (%s); remove it only after checking %s and %s by hand'
                        % (self.p(STATE), e, self.p(SERVER), self.p(ORIG)))
        if not isinstance(st, dict) or not isinstance(st.get('installed_sha256'), str) \
                or not isinstance(st.get('original'), bool):
            raise Error('%s: not a record of this command' % self.p(STATE))
        return st

    def write_state(self, st):
        tmp = self.p('.%s.%d' % (STATE, os.getpid()))
        with open(tmp, 'w') as f:
            json.dump(st, f, indent=1, sort_keys=True)
            f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.p(STATE))

    def sha(self, name):
        """SHA-256 of a regular file NAME; None if absent or not a regular file."""
        path = self.p(name)
        if os.path.islink(path) or not os.path.isfile(path):
            return None
        return sha256(path)

    def same_file(self, a, b):
        try:
            sa, sb = os.lstat(self.p(a)), os.lstat(self.p(b))
        except FileNotFoundError:
            return False
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

    def keep_aside(self, name, as_name):
        """Hard-links NAME as AS_NAME, replacing AS_NAME atomically."""
        tmp = self.p('.%s.%d' % (as_name, os.getpid()))
        os.link(self.p(name), tmp, follow_symlinks=False)
        os.rename(tmp, self.p(as_name))


def writable(d):
    # Root passes os.access on a read-only mount too: try for real.
    probe = d.p('.wcfsd-install.probe.%d' % os.getpid())
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise Error('%s: cannot write there (%s): run this as the owner of that '
                    'wendelin.core installation' % (d.path, e.strerror))


def install(d, src, out):
    version = wcfsd_version(src)
    writable(d)
    st = d.state()
    new_sha = sha256(src)
    if st is None:
        if d.exists(ORIG) and not d.same_file(ORIG, SERVER):
            raise Error('%s exists but no install is recorded (%s): a leftover? Compare it '
                        'with %s and remove the one that is not upstream\'s server'
                        % (d.p(ORIG), STATE, d.p(SERVER)))
        original = d.exists(SERVER)
        if original:
            d.keep_aside(SERVER, ORIG)
        note = ('original server kept as %s' % d.p(ORIG) if original else
                'there was no server there: restore removes it')
    else:
        original = st['original']
        cur = d.sha(SERVER)
        if d.exists(SERVER) and cur != st['installed_sha256']:
            # Not what we put there: wendelin.core reinstalled, or a server
            # copied in by hand. That is now what restore must put back.
            d.keep_aside(SERVER, ORIG)
            original = True
            note = ('%s was replaced since the last install (wendelin.core reinstalled?): '
                    'that one is kept as the original now, in %s' % (d.p(SERVER), d.p(ORIG)))
        elif cur == new_sha:
            print('%s: already installed, up to date: %s (%s)' % (PROG, d.p(SERVER), version),
                  file=out)
            return
        else:
            note = 'updated the wcfsd installed before'
    if original and not d.exists(ORIG):
        raise Error('%s is missing: the original server is recorded but not there; '
                    'not installing over it' % d.p(ORIG))
    d.write_state({'original': original, 'installed_sha256': new_sha,
                   'wcfsd': src, 'wcfsd_version': version})
    tmp = d.p('.%s.new.%d' % (SERVER, os.getpid()))
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o755)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        if sha256(tmp) != new_sha:
            raise Error('%s changed while it was copied' % src)
        os.rename(tmp, d.p(SERVER))
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    d.sync()
    print('%s: installed %s as %s (%s); %s' % (PROG, src, d.p(SERVER), version, note), file=out)


def restore(d, out):
    st = d.state()
    if st is None:
        if d.exists(ORIG):
            raise Error('%s exists but no install is recorded (%s): not touching it'
                        % (d.p(ORIG), STATE))
        print('%s: nothing to restore: no wcfsd installed in %s' % (PROG, d.path), file=out)
        return
    writable(d)
    cur = d.sha(SERVER)
    ours = cur == st['installed_sha256']
    if d.exists(SERVER) and not ours and not (st['original'] and d.same_file(SERVER, ORIG)):
        raise Error('%s is not the wcfsd installed there (replaced since, e.g. by reinstalling '
                    'wendelin.core): left as is. To keep it: rm %s%s'
                    % (d.p(SERVER), d.p(STATE), ' ' + d.p(ORIG) if st['original'] else ''))
    if st['original']:
        if not d.exists(ORIG):
            raise Error('%s is missing: cannot put the original server back' % d.p(ORIG))
        if d.same_file(ORIG, SERVER):
            # (An install stopped before wcfsd went in: rename(2) of two
            # links of one file would do nothing.)
            os.unlink(d.p(ORIG))
        else:
            os.rename(d.p(ORIG), d.p(SERVER))
        what = 'put the original server back as %s' % d.p(SERVER)
    else:
        if d.exists(SERVER):
            os.unlink(d.p(SERVER))
        what = 'removed wcfsd from %s (there was no server before)' % d.path
    os.unlink(d.p(STATE))
    d.sync()
    print('%s: %s' % (PROG, what), file=out)


def status(d, out):
    """Exit status 0: wcfsd installed (and still there); 1: not."""
    st = d.state()
    if st is None:
        print('%s: not installed in %s (%s: %s)' % (
            PROG, d.path, SERVER, 'present' if d.exists(SERVER) else 'absent'), file=out)
        return 1
    if d.sha(SERVER) != st['installed_sha256']:
        print('%s: installed in %s, but %s was replaced since' % (PROG, d.path, d.p(SERVER)),
              file=out)
        return 1
    print('%s: installed: %s is %s (from %s); original: %s' % (
        PROG, d.p(SERVER), st.get('wcfsd_version'), st.get('wcfsd'),
        d.p(ORIG) if st['original'] else 'none'), file=out)
    return 0


def main(argv):
    ap = argparse.ArgumentParser(
        prog=PROG, description='Put wcfsd in place of wendelin.core\'s WCFS server '
        '(install), or put the original back (restore).')
    ap.add_argument('command', choices=['install', 'restore', 'status'])
    ap.add_argument('--python', default=sys.executable, metavar='PY',
                    help='the interpreter whose wendelin.core to switch (default: this one)')
    ap.add_argument('--wcfsd', metavar='PATH',
                    help='the wcfsd to install (default: the one `python -m wcfs` runs)')
    args = ap.parse_args(argv)
    if args.wcfsd and args.command != 'install':
        ap.error('--wcfsd is for install only')
    try:
        # The wcfsd first: with none, nothing else matters.
        src = find_wcfsd(args.wcfsd) if args.command == 'install' else None
        d = Dir(locate(args.python))
        try:
            if args.command == 'install':
                install(d, src, sys.stdout)
                return 0
            if args.command == 'restore':
                restore(d, sys.stdout)
                return 0
            return status(d, sys.stdout)
        finally:
            d.close()
    except Error as e:
        print('%s %s: %s' % (PROG, args.command, e), file=sys.stderr)
        return 1
    except OSError as e:
        # Anything the checks above did not foresee (a full disk, EPERM on
        # rename…): the state record is written before the binary is
        # swapped, so rerunning the command after fixing the cause is safe.
        print('%s %s: %s' % (PROG, args.command,
                             '%s: %s' % (e.filename, e.strerror) if e.filename else e),
              file=sys.stderr)
        return 1
