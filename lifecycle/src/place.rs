//! The files of the lifecycle under the mount root, made and opened so
//! that nothing there is trusted that we did not create.
//!
//! # The threat
//!
//! The mount root (`/dev/shm/wcfs`) is writable by every user, so that
//! every user can join. Anyone can therefore put a name there before we
//! do: a symbolic link to `/etc`, a hard link to a file of root's, a
//! directory or a FIFO of their own. A daemon started by root that
//! followed such a name would mount over `/etc` or append its log to
//! `/etc/shadow`. The kernel's `fs.protected_symlinks`,
//! `fs.protected_hardlinks` and `fs.protected_regular` would stop some of
//! it, but they are settings of the machine, off on some, so we rely on
//! none of them.
//!
//! # The rules
//!
//! - The mount root must be a directory (not a symbolic link to one)
//!   owned by root or by the user running us (`geteuid`), and if others
//!   may write to it, sticky. We create it with mode 1777 when missing.
//!   Everything below is reached relative to a descriptor of the root
//!   that was opened `O_NOFOLLOW|O_DIRECTORY` and checked with `fstat`
//!   (the `*at` calls), never by a path looked up again.
//! - The mountpoint must be a directory owned by us. We make it with
//!   `mkdirat`; whether made now or found, it is checked with
//!   `fstatat(AT_SYMLINK_NOFOLLOW)`: a symbolic link, another type or
//!   another owner is refused.
//! - The lock and the log must be regular files owned by us or by root,
//!   with one link (a second name would be a hard link someone made to a
//!   file of theirs or of root's). They are opened `O_NOFOLLOW|O_NONBLOCK`
//!   (a FIFO neither blocks the open nor is used), created
//!   `O_CREAT|O_EXCL`, and checked with `fstat` on the descriptor we got —
//!   what we use is what we checked. Never truncated; the log is appended.
//! - Removing (`remove_all`) checks an entry by the same rules and then
//!   removes that name (`unlinkat`, which never follows a link); what is not
//!   ours is left alone and reported.
//!
//! A refusal is [`Error::Unsafe`]: it names the path and says what is
//! wrong with it. Nothing is created, written, mounted or removed through a
//! refused name.
//!
//! # Why a checked name stays ours
//!
//! In a sticky directory only the owner of an entry, the owner of the
//! directory and root may rename or remove the entry. The mount root is
//! owned by root or by us, and the names we use in it are our own
//! (checked), so once checked a name keeps denoting the directory or file
//! we checked until we — or root — change it. The ancestors of the mount
//! root are the system's (`/dev/shm` is itself a root-owned sticky
//! directory); with `$WCFS_MOUNT_ROOT` they must be as safe, which we
//! assume and do not check (`/dev/shm` may itself be a symbolic link on
//! some systems).
//!
//! That is why the mountpoint can be handed to the kernel by path: no
//! other user can make that path name anything else between our check
//! and the mount. The daemon checks it once more right before mounting
//! ([`check_mountpoint`]), for the only change left: root, or our own
//! user, replacing it in between (which is no attack: either could mount
//! anything anywhere it can write anyway). Mounting through `/proc/self/fd/N` of a checked `O_PATH`
//! descriptor would not help: fuser canonicalizes the mountpoint and
//! fusermount3 resolves it with `realpath` before mounting, so both turn
//! it back into this path.

use crate::Error;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What an entry under the mount root must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mountpoint,
    Lock,
    Log,
}

impl Kind {
    fn is_dir(self) -> bool {
        self == Kind::Mountpoint
    }
}

/// The mount root, opened and checked (see the module doc).
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
    euid: u32,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no failure mode and no memory effects.
    unsafe { libc::geteuid() }
}

fn cname(name: &OsStr) -> io::Result<CString> {
    if name.is_empty() || name.as_bytes().contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain name",
        ));
    }
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name with NUL"))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `dir` may be `AT_FDCWD`.
fn lstat_at(dir: RawFd, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated name and a stat buffer we own.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of a descriptor we hold into a buffer we own.
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_at(dir: RawFd, name: &CString, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: a NUL-terminated name; the mode is read only with O_CREAT.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) };
        if fd >= 0 {
            // SAFETY: a new descriptor, owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// What the file type bits of `mode` name.
fn type_name(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "of an unknown type",
    }
}

fn unsafe_at(path: &Path, why: String) -> Error {
    Error::Unsafe {
        path: path.to_path_buf(),
        why,
    }
}

/// Whether `st` is what an entry of `kind` must be; the reason if not.
/// `link` is the target of a symbolic link, for the message.
fn check_entry(
    st: &libc::stat,
    kind: Kind,
    euid: u32,
    link: Option<PathBuf>,
) -> Result<(), String> {
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFLNK {
        return Err(match link {
            Some(t) => format!("is a symbolic link (to {})", t.display()),
            None => "is a symbolic link".into(),
        });
    }
    let want = if kind.is_dir() {
        libc::S_IFDIR
    } else {
        libc::S_IFREG
    };
    if fmt != want {
        return Err(format!(
            "is {}, not {}",
            type_name(st.st_mode),
            type_name(want)
        ));
    }
    let uid = st.st_uid;
    let owner_ok = match kind {
        // Only its owner (or root) may mount on a directory there, and a
        // directory of root's would be root's to replace.
        Kind::Mountpoint => uid == euid,
        Kind::Lock | Kind::Log => uid == euid || uid == 0,
    };
    if !owner_ok {
        let want = if kind == Kind::Mountpoint || euid == 0 {
            format!("uid {euid}")
        } else {
            format!("uid {euid} or root")
        };
        return Err(format!("is owned by uid {uid}, not by {want}"));
    }
    if !kind.is_dir() && st.st_nlink != 1 {
        return Err(format!(
            "has {} hard links (a name of a file that is not ours alone)",
            st.st_nlink
        ));
    }
    Ok(())
}

/// Whether `st` may be the mount root; the reason if not.
fn check_root(st: &libc::stat, euid: u32) -> Result<(), String> {
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt != libc::S_IFDIR {
        return Err(format!("is {}, not a directory", type_name(st.st_mode)));
    }
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(format!(
            "is owned by uid {}, not by root{}",
            st.st_uid,
            if euid == 0 {
                String::new()
            } else {
                format!(" or uid {euid}")
            }
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
        return Err(format!(
            "is writable by others but not sticky (mode {mode:o}): anyone could rename \
             what we put there"
        ));
    }
    Ok(())
}

fn read_link_at(dir: RawFd, name: &CString) -> Option<PathBuf> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: readlinkat into a buffer we own, within its length.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(PathBuf::from(OsStr::from_bytes(&buf)))
}

impl Root {
    /// Opens and checks the mount root at `path`; None when it does not
    /// exist.
    pub(crate) fn open(path: &Path) -> Result<Option<Root>, Error> {
        Self::open_or_create(path, false)
    }

    /// Opens and checks the mount root at `path`, creating it (mode 1777)
    /// when missing.
    pub(crate) fn create(path: &Path) -> Result<Root, Error> {
        Self::open_or_create(path, true)?
            .ok_or_else(|| Error::io(path.display(), io::Error::from_raw_os_error(libc::ENOENT)))
    }

    fn open_or_create(path: &Path, create: bool) -> Result<Option<Root>, Error> {
        let euid = euid();
        let cpath = crate::sys::cstring(path).map_err(|e| Error::io(path.display(), e))?;
        let mut created = false;
        if create {
            // SAFETY: mkdir with a NUL-terminated path.
            if unsafe { libc::mkdir(cpath.as_ptr(), 0o755) } == 0 {
                created = true;
            } else {
                let e = io::Error::last_os_error();
                if errno(&e) != libc::EEXIST {
                    return Err(Error::io(format!("mkdir {}", path.display()), e));
                }
            }
        }
        // For the message: what is there, without following it.
        match lstat_at(libc::AT_FDCWD, &cpath) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                let to = read_link_at(libc::AT_FDCWD, &cpath)
                    .map_or(String::new(), |t| format!(" (to {})", t.display()));
                return Err(unsafe_at(path, format!("is a symbolic link{to}")));
            }
            Ok(st) => check_root(&st, euid).map_err(|why| unsafe_at(path, why))?,
            Err(e) if errno(&e) == libc::ENOENT && !create => return Ok(None),
            Err(e) => return Err(Error::io(path.display(), e)),
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = match open_at(libc::AT_FDCWD, &cpath, flags, 0) {
            Ok(fd) => fd,
            Err(e) if errno(&e) == libc::ENOENT && !create => return Ok(None),
            Err(e) if matches!(errno(&e), libc::ELOOP | libc::ENOTDIR) => {
                return Err(unsafe_at(
                    path,
                    format!("changed while we looked at it ({e})"),
                ))
            }
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        // What we hold is what counts.
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io(path.display(), e))?;
        check_root(&st, euid).map_err(|why| unsafe_at(path, why))?;
        if created && st.st_uid == euid {
            // Ours, just made (mkdir's mode went through the umask).
            // SAFETY: fchmod of the directory we hold.
            if unsafe { libc::fchmod(fd.as_raw_fd(), 0o1777) } != 0 {
                let e = io::Error::last_os_error();
                return Err(Error::io(format!("chmod 1777 {}", path.display()), e));
            }
        }
        Ok(Some(Root {
            fd,
            path: path.to_path_buf(),
            euid,
        }))
    }

    fn path_of(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    fn cname(&self, name: &OsStr) -> Result<CString, Error> {
        cname(name).map_err(|e| Error::io(self.path_of(name).display(), e))
    }

    /// Checks the entry `name` without changing anything: None when there
    /// is none, an error when it is not what `kind` must be.
    ///
    /// Never call it on a mountpoint while something is mounted there: the
    /// lookup would go into that filesystem.
    pub(crate) fn inspect(&self, name: &OsStr, kind: Kind) -> Result<Option<libc::stat>, Error> {
        let c = self.cname(name)?;
        match lstat_at(self.fd.as_raw_fd(), &c) {
            Ok(st) => {
                let link = (st.st_mode & libc::S_IFMT == libc::S_IFLNK)
                    .then(|| read_link_at(self.fd.as_raw_fd(), &c))
                    .flatten();
                check_entry(&st, kind, self.euid, link)
                    .map_err(|why| unsafe_at(&self.path_of(name), why))?;
                Ok(Some(st))
            }
            Err(e) if errno(&e) == libc::ENOENT => Ok(None),
            Err(e) => Err(Error::io(self.path_of(name).display(), e)),
        }
    }

    /// The mountpoint `name`: our own directory, made now if missing.
    pub(crate) fn make_mountpoint(&self, name: &OsStr) -> Result<PathBuf, Error> {
        let path = self.path_of(name);
        let c = self.cname(name)?;
        for _ in 0..8 {
            // SAFETY: mkdirat relative to the root we hold, a NUL-terminated name.
            if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                let e = io::Error::last_os_error();
                if errno(&e) != libc::EEXIST {
                    return Err(Error::io(format!("mkdir {}", path.display()), e));
                }
            }
            // Made now or found: checked either way (someone else's name may
            // have won the race).
            if self.inspect(name, Kind::Mountpoint)?.is_some() {
                return Ok(path);
            }
            // Removed in between (by its owner): again.
        }
        Err(Error::io(
            format!("mkdir {}", path.display()),
            io::Error::other("it keeps disappearing"),
        ))
    }

    /// Opens the regular file `name` (`Lock` or `Log`), creating it with
    /// `mode` when missing: `O_NOFOLLOW`, `O_EXCL` to create, checked by
    /// `fstat` on what was opened. `access` is `O_RDONLY` or
    /// `O_RDWR|O_APPEND`.
    fn open_file(
        &self,
        name: &OsStr,
        kind: Kind,
        access: libc::c_int,
        mode: u32,
    ) -> Result<File, Error> {
        let path = self.path_of(name);
        let c = self.cname(name)?;
        let base = access | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
        for _ in 0..8 {
            // Look first, for a clear refusal (and so that a FIFO or a
            // directory is never opened at all).
            if self.inspect(name, kind)?.is_some() {
                match open_at(self.fd.as_raw_fd(), &c, base, 0) {
                    Ok(fd) => return self.checked_file(fd, &path, kind),
                    Err(e) if errno(&e) == libc::ENOENT => continue,
                    Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
                }
            }
            match open_at(
                self.fd.as_raw_fd(),
                &c,
                base | libc::O_CREAT | libc::O_EXCL,
                mode,
            ) {
                Ok(fd) => return self.checked_file(fd, &path, kind),
                Err(e) if errno(&e) == libc::EEXIST => continue,
                Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
            }
        }
        Err(Error::io(
            format!("open {}", path.display()),
            io::Error::other("it keeps changing"),
        ))
    }

    fn checked_file(&self, fd: OwnedFd, path: &Path, kind: Kind) -> Result<File, Error> {
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io(path.display(), e))?;
        check_entry(&st, kind, self.euid, None).map_err(|why| unsafe_at(path, why))?;
        // A regular file: O_NONBLOCK only kept a FIFO from blocking the open.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        Ok(File::from(fd))
    }

    /// The lock file `name`, opened for reading (enough for `flock`).
    pub(crate) fn open_lock(&self, name: &OsStr) -> Result<File, Error> {
        self.open_file(name, Kind::Lock, libc::O_RDONLY, 0o644)
    }

    /// The log `name`, opened for appending (and reading, for its tail);
    /// None when we may not write to it (a log of root's, for another
    /// user).
    pub(crate) fn open_log(&self, name: &OsStr) -> Result<Option<File>, Error> {
        match self.open_file(name, Kind::Log, libc::O_RDWR | libc::O_APPEND, 0o644) {
            Ok(f) => Ok(Some(f)),
            Err(Error::Io { errno, .. }) if errno == libc::EACCES => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the entry `name` if it is ours by the rules of `kind`;
    /// whether there was one. Something that is not ours is left alone.
    pub(crate) fn remove(&self, name: &OsStr, kind: Kind) -> Result<bool, Error> {
        if self.inspect(name, kind)?.is_none() {
            return Ok(false);
        }
        let c = self.cname(name)?;
        let flags = if kind.is_dir() { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: unlinkat relative to the root we hold; it removes the name,
        // never what a link points to.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), flags) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if errno(&e) == libc::ENOENT {
            return Ok(false);
        }
        Err(Error::io(
            format!("remove {}", self.path_of(name).display()),
            e,
        ))
    }
}

/// Right before mounting at `mountpoint`: when it lies in a directory
/// every user may write to (as the mount root, or `/tmp`), it must be our
/// own directory, not a symbolic link, in a directory owned by root or us
/// and sticky (see the module doc). Elsewhere (a mountpoint the user chose
/// in a directory of their own) nothing more is asked. wcfsd calls it
/// when it checks its mountpoint and again just before the mount.
pub fn check_mountpoint(mountpoint: &Path) -> Result<(), Error> {
    let Some(name) = mountpoint.file_name() else {
        return Ok(());
    };
    let parent = match mountpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let cparent = crate::sys::cstring(parent).map_err(|e| Error::io(parent.display(), e))?;
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat of a NUL-terminated path into a buffer we own.
    if unsafe { libc::stat(cparent.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(parent.display(), io::Error::last_os_error()));
    }
    if st.st_mode & 0o002 == 0 {
        return Ok(());
    }
    let root = Root::open(parent)?
        .ok_or_else(|| Error::io(parent.display(), io::Error::from_raw_os_error(libc::ENOENT)))?;
    match root.inspect(name, Kind::Mountpoint)? {
        Some(_) => Ok(()),
        None => Err(Error::io(
            mountpoint.display(),
            io::Error::from_raw_os_error(libc::ENOENT),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(mode: u32, uid: u32, nlink: u64) -> libc::stat {
        // SAFETY: plain data; all-zero is valid.
        let mut s: libc::stat = unsafe { std::mem::zeroed() };
        s.st_mode = mode;
        s.st_uid = uid;
        s.st_nlink = nlink as _;
        s
    }

    #[test]
    fn entry_rules() {
        let (dir, reg) = (libc::S_IFDIR | 0o755, libc::S_IFREG | 0o644);
        assert!(check_entry(&st(dir, 1000, 2), Kind::Mountpoint, 1000, None).is_ok());
        let e = check_entry(&st(dir, 0, 2), Kind::Mountpoint, 1000, None).unwrap_err();
        assert!(e.contains("owned by uid 0, not by uid 1000"), "{e}");
        let e = check_entry(&st(reg, 1000, 1), Kind::Mountpoint, 1000, None).unwrap_err();
        assert_eq!(e, "is a regular file, not a directory");
        let e = check_entry(
            &st(libc::S_IFLNK | 0o777, 1000, 1),
            Kind::Log,
            1000,
            Some("/etc/passwd".into()),
        )
        .unwrap_err();
        assert_eq!(e, "is a symbolic link (to /etc/passwd)");
        assert!(check_entry(&st(reg, 0, 1), Kind::Lock, 1000, None).is_ok());
        assert!(check_entry(&st(reg, 1000, 1), Kind::Log, 1000, None).is_ok());
        let e = check_entry(&st(reg, 0, 2), Kind::Log, 0, None).unwrap_err();
        assert!(e.contains("2 hard links"), "{e}");
        let e = check_entry(&st(reg, 65534, 1), Kind::Lock, 0, None).unwrap_err();
        assert_eq!(e, "is owned by uid 65534, not by uid 0");
        let e = check_entry(&st(libc::S_IFIFO | 0o644, 0, 1), Kind::Lock, 0, None).unwrap_err();
        assert_eq!(e, "is a FIFO, not a regular file");
    }

    #[test]
    fn root_rules() {
        assert!(check_root(&st(libc::S_IFDIR | 0o1777, 0, 2), 1000).is_ok());
        assert!(check_root(&st(libc::S_IFDIR | 0o1777, 1000, 2), 1000).is_ok());
        assert!(check_root(&st(libc::S_IFDIR | 0o755, 0, 2), 1000).is_ok());
        let e = check_root(&st(libc::S_IFDIR | 0o1777, 65534, 2), 0).unwrap_err();
        assert_eq!(e, "is owned by uid 65534, not by root");
        let e = check_root(&st(libc::S_IFDIR | 0o777, 0, 2), 0).unwrap_err();
        assert!(e.contains("not sticky (mode 777)"), "{e}");
        let e = check_root(&st(libc::S_IFREG | 0o644, 0, 1), 0).unwrap_err();
        assert_eq!(e, "is a regular file, not a directory");
    }

    #[test]
    fn names_are_plain() {
        assert!(cname(OsStr::new("a/b")).is_err());
        assert!(cname(OsStr::new("")).is_err());
        assert!(cname(OsStr::new("abc.lock")).is_ok());
    }
}
