"""Builds the wcfs wheel: the Python package with libwcfs.so, wcfsd and
wcfs.h inside (metadata: pyproject.toml; why this way: packaging/README.md).

The binaries are cargo's release build of the repository this folder sits
in: ``build_py`` runs ``cargo build --release -p wcfs -p wcfsd`` — a no-op
when ./run-tests or a developer built them already, so the workspace is
never compiled a second time for the wheel — then copies them into the
package, stripped of debug info (the release profile keeps line tables for
profiling; a wheel has no use for them). In the installed package the
library and wcfsd sit side by side, where libwcfs's lookup finds the
daemon for ``join(zurl, autostart=True)`` (lifecycle/src/lib.rs). The
library is named by its SONAME, ``libwcfs.so.<abi>``: a C extension linked
against it (Cython, ``cimport wcfs.wcfs``) needs that name, and finds the
file through an rpath to the package.

The wheel is tagged ``py3-none-<platform>``: its code is Python 3 and
ctypes (no extension module, so any Python 3), its binaries are for this
machine's platform.

With ``WCFS_ZIG_TARGET`` set to ``<arch>-unknown-linux-gnu.2.<minor>``
(x86_64 or aarch64), the binaries are built instead with ``cargo zigbuild``
for that target, linked by zig against glibc 2.<minor>'s symbols, and the
wheel is tagged ``manylinux_2_<minor>_<arch>``: it installs on any Linux
with that glibc or newer (packaging/build-wheel --manylinux; the tag is
proved by auditwheel and by the symbol versions, packaging/check-glibc).
This build has no debug info at all (``debug = 0``, so cargo strips the
binaries itself: binutils' strip knows no aarch64) and lives in
``target/<triple>/release``, apart from the native build.

From an sdist (packaging/build-sdist), the Rust sources are in ``rust/``
beside this file instead of the repository around it.
"""
import json
import os
import re
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.errors import SetupError

HERE = os.path.dirname(os.path.abspath(__file__))
# The Rust workspace: rust/ in an sdist, else the repository python/ is in.
REPO = os.path.join(HERE, 'rust') if os.path.isfile(os.path.join(HERE, 'rust', 'Cargo.toml')) \
    else os.path.dirname(HERE)
ZIG_TARGET = re.compile(r'^(x86_64|aarch64)-unknown-linux-gnu\.2\.(\d+)$')


class BuildError(SetupError):
    """Shown as `error: <message>`, without a traceback."""


def workspace_version():
    """[workspace.package] version of the repository's Cargo.toml."""
    path = os.path.join(REPO, 'Cargo.toml')
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise BuildError('%s: %s — the wheel is built from a checkout of the WCFS '
                         'repository (pip wheel ./python there) or from its sdist'
                         % (path, e.strerror))
    section = re.search(r'^\[workspace\.package\]\n(.*?)(?=^\[|\Z)', text, re.M | re.S)
    m = section and re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
    if not m:
        raise BuildError('%s: no version in [workspace.package]' % path)
    return m.group(1)


def abi_version():
    """WCFS_ABI_VERSION of include/wcfs.h (defined in src/ffi/abi.rs)."""
    path = os.path.join(REPO, 'include', 'wcfs.h')
    with open(path) as f:
        m = re.search(r'^#define WCFS_ABI_VERSION (\d+)$', f.read(), re.M)
    if not m:
        raise BuildError('%s: no WCFS_ABI_VERSION' % path)
    return int(m.group(1))


def zig_target():
    """(triple with glibc version, arch, glibc minor) of $WCFS_ZIG_TARGET, or None."""
    target = os.environ.get('WCFS_ZIG_TARGET')
    if not target:
        return None
    m = ZIG_TARGET.match(target)
    if not m:
        raise BuildError('WCFS_ZIG_TARGET=%s: want <arch>-unknown-linux-gnu.2.<minor>, '
                         'arch x86_64 or aarch64 (e.g. x86_64-unknown-linux-gnu.2.28)' % target)
    return target, m.group(1), int(m.group(2))


def run(cmd, env=None):
    try:
        return subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.PIPE,
                              env=env).stdout
    except FileNotFoundError:
        raise BuildError('%s not found: %s' % (cmd[0], ' '.join(cmd)))
    except subprocess.CalledProcessError as e:
        raise BuildError('%s failed (exit status %d)' % (' '.join(cmd), e.returncode))


def cargo_release_build():
    """Builds (or finds up to date) libwcfs.so and wcfsd; returns {path: name in the package}."""
    cargo = os.environ.get('CARGO', 'cargo')
    zig = zig_target()
    if zig:
        env = dict(os.environ, CARGO_PROFILE_RELEASE_DEBUG='0',
                   CARGO_PROFILE_RELEASE_STRIP='debuginfo')
        run([cargo, 'zigbuild', '--release', '--target', zig[0], '-p', 'wcfs', '-p', 'wcfsd'],
            env=env)
    else:
        run([cargo, 'build', '--release', '-p', 'wcfs', '-p', 'wcfsd'])
    meta = json.loads(run([cargo, 'metadata', '--format-version', '1', '--no-deps']))
    release = os.path.join(meta['target_directory'], *(
        [zig[0].rsplit('.', 2)[0], 'release'] if zig else ['release']))
    built = {os.path.join(release, 'libwcfs.so'): 'libwcfs.so.%d' % abi_version(),
             os.path.join(release, 'wcfsd'): 'wcfsd'}
    for path in built:
        if not os.path.isfile(path):
            raise BuildError('%s missing after cargo build' % path)
    return built


class BuildPyWithCargo(build_py):
    """build_py, plus the cargo-built binaries and the C header in the package."""

    def run(self):
        super().run()
        pkg = os.path.abspath(os.path.join(self.build_lib, 'wcfs'))
        for src, name in cargo_release_build().items():
            dst = os.path.join(pkg, name)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o755)
            if not zig_target():  # (zig's build is stripped by cargo)
                run(['strip', '--strip-debug', dst])
        # For Cython users: cimport wcfs.wcfs needs wcfs.h (wcfs.get_include()).
        os.makedirs(os.path.join(pkg, 'include'), exist_ok=True)
        shutil.copyfile(os.path.join(REPO, 'include', 'wcfs.h'),
                        os.path.join(pkg, 'include', 'wcfs.h'))


class BinaryDistribution(Distribution):
    """Holds binaries: installed to platlib, the wheel is not pure Python."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """A wheel for this platform (it holds binaries), for any Python 3; for
    manylinux_2_<minor>_<arch> when zig built them for that glibc."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        zig = zig_target()
        if zig:
            plat = 'manylinux_2_%d_%s' % (zig[2], zig[1])
        return 'py3', 'none', plat


setup(version=workspace_version(), distclass=BinaryDistribution,
      cmdclass={'build_py': BuildPyWithCargo, 'bdist_wheel': PlatformWheel})
