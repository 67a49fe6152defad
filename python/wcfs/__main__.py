"""python -m wcfs — the wcfsd of this package, by zurl (as upstream's
``python -m wendelin.wcfs serve|status|stop``):

    python -m wcfs serve [options] ZURL     in the foreground
    python -m wcfs start [options] ZURL     in the background
    python -m wcfs status ZURL              exit status 0 healthy, 1 dead, 3 absent, 4 other
    python -m wcfs stop ZURL
    python -m wcfs wendelin install|restore|status [--python PY]
                                            wcfsd in place of wendelin.core's server
                                            (wcfs/_wendelin.py)

Otherwise every argument goes to wcfsd as given (``-version``, ``ls ZURL``, ``ZURL
MOUNTPOINT`` too): this process becomes wcfsd (exec), so the output and the
exit status are wcfsd's own. The binary is the one ``wcfs.join(zurl,
autostart=True)`` starts, looked up in the same order (lifecycle/src/lib.rs):
``$WCFS_WCFSD``; beside the loaded libwcfs.so (the wheel bundles both), or
in its prefix's ``bin/``; beside the Python executable; ``$PATH``.
"""
import os
import shutil
import sys

import wcfs


def _loaded_library():
    """The path of the libwcfs loaded by ctypes (resolved through the
    process's mappings when it was found by SONAME on the system path)."""
    if os.sep in wcfs.library_path:
        return os.path.abspath(wcfs.library_path)
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                path = line.split(None, 5)[-1].strip()
                if os.path.basename(path).startswith('libwcfs.so'):
                    return path
    except OSError:
        pass
    return None


def wcfsd_candidates():
    env = os.environ.get('WCFS_WCFSD')
    if env:
        yield env
        return
    lib = _loaded_library()
    if lib:
        libdir = os.path.dirname(lib)
        yield os.path.join(libdir, 'wcfsd')
        yield os.path.join(libdir, '..', 'bin', 'wcfsd')
        if os.path.basename(os.path.dirname(libdir)) == 'lib':  # <prefix>/lib/<triplet>
            yield os.path.join(libdir, '..', '..', 'bin', 'wcfsd')
    yield os.path.join(os.path.dirname(os.path.realpath(sys.executable)), 'wcfsd')
    yield shutil.which('wcfsd') or 'wcfsd on $PATH'


def wcfsd_path():
    """The wcfsd to run; SystemExit naming every place tried when there is none."""
    tried = []
    for path in wcfsd_candidates():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        tried.append(path)
    sys.exit('python -m wcfs: no wcfsd found; tried: %s' % ', '.join(tried))


def main():
    if sys.argv[1:2] == ['wendelin']:
        from wcfs import _wendelin
        sys.exit(_wendelin.main(sys.argv[2:]))
    path = wcfsd_path()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, [path] + sys.argv[1:])


if __name__ == '__main__':
    main()
