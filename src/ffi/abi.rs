// The one definition of libwcfs's ABI version. Kept alone in this file
// because it is read from several places that cannot share a crate:
// build.rs (the SONAME), wcfsd (`wcfsd --version`, by include!), cbindgen
// (`WCFS_ABI_VERSION` in include/wcfs.h), and through the header cmake/
// (the installed SONAME links) and packaging/ (the Debian package name
// libwcfs<N>). No attributes or inner doc comments here: build.rs and
// wcfsd include! this file as plain items.

/// The ABI version of libwcfs: its SONAME is `libwcfs.so.<WCFS_ABI_VERSION>`.
/// Bumped whenever a change of the C ABI breaks programs linked against an
/// older library (a name removed, a signature or a meaning changed); adding
/// functions does not bump it. Independent of the package version, which
/// may change without touching the ABI (and in 0.x releases may break it
/// on a minor version: then this moves).
pub const WCFS_ABI_VERSION: u32 = 0;
