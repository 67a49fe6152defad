//! The operating-system facts the lifecycle works from: what is mounted
//! where (`/proc/self/mountinfo`), which process serves a FUSE connection
//! (`/proc/*/fd` + `/proc/*/fdinfo`), whether a mount answers (a probe
//! with a deadline), and the blunt tools for a stuck or dead daemon
//! (fusectl abort, SIGKILL, lazy unmount).
//!
//! Nothing here blocks without a bound: a stuck daemon makes every
//! filesystem call on its mount sleep until it answers, so the only such
//! call — the probe — runs on a thread of its own and is abandoned at its
//! deadline (the thread ends when the daemon answers or dies; a killed
//! daemon's connection is aborted, which wakes it).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the superblock.
    pub major: u32,
    pub minor: u32,
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    /// The FUSE connection number: the kernel's encoding of the
    /// superblock's device number, which names `/sys/fs/fuse/connections/<N>`
    /// and shows as `fuse_connection` in the fdinfo of the daemon's
    /// `/dev/fuse` descriptors.
    pub fn fuse_conn(&self) -> u64 {
        ((self.major as u64) << 20) | self.minor as u64
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; None if malformed.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let _root = fields.next()?;
    let mountpoint = unescape_mountinfo(fields.next()?);
    let _opts = fields.next()?;
    // Optional fields up to the "-" separator.
    for f in fields.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fstype = fields.next()?.to_string();
    let source = unescape_mountinfo(fields.next()?);
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mountpoint,
        fstype,
        source,
    })
}

/// What is mounted at `path` now (the topmost mount if several are
/// stacked), from our mount namespace's view.
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    let want = path.to_string_lossy();
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|m| m.mountpoint == want))
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `D`, `T`, `Z`, …);
/// None when there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may contain anything, so find the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Whether `pid` is a live process (a zombie has already exited: no init
/// in a container may be reaping it).
pub fn alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Whether `pid` is stopped (SIGSTOP, a debugger): it cannot answer.
pub fn stopped(pid: u32) -> bool {
    matches!(proc_state(pid), Some('T' | 't'))
}

/// The NUL-separated arguments of a process.
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What we know of a process's `/dev/fuse` descriptors: the connection of
/// each when the kernel tells (fdinfo `fuse_connection`, Linux ≥ 6.?), or
/// `Some(None)` when it has one but the kernel does not say which.
fn fuse_conns_of(pid: u32) -> Option<Vec<Option<u64>>> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut conns = Vec::new();
    for ent in dir.flatten() {
        let Ok(target) = fs::read_link(ent.path()) else {
            continue;
        };
        if target != Path::new("/dev/fuse") {
            continue;
        }
        let fdinfo = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            ent.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let conn = fdinfo.lines().find_map(|l| {
            l.strip_prefix("fuse_connection:")
                .and_then(|v| v.trim().parse().ok())
        });
        conns.push(conn);
    }
    (!conns.is_empty()).then_some(conns)
}

/// The process serving FUSE connection `conn`: the one holding a
/// `/dev/fuse` descriptor of that connection (SPEC §4: the daemon keeps it
/// open itself). On kernels whose fdinfo does not name the connection, the
/// process with a `/dev/fuse` descriptor whose arguments include `zurl`
/// (and, to choose among several, `mountpoint`).
pub fn find_server(conn: u64, zurl: &str, mountpoint: &Path) -> Option<u32> {
    let mnt = mountpoint.to_string_lossy();
    let mut guesses = Vec::new();
    for ent in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(conns) = fuse_conns_of(pid) else {
            continue;
        };
        if conns.contains(&Some(conn)) {
            return Some(pid);
        }
        if conns.contains(&None) {
            let args = cmdline(pid);
            if args.iter().any(|a| a == zurl) {
                let with_mnt = args.iter().any(|a| *a == mnt);
                guesses.push((with_mnt, pid));
            }
        }
    }
    guesses.sort();
    guesses.last().map(|&(_, pid)| pid)
}

/// Outcome of reading `.wcfs/zurl` within a deadline.
#[derive(Debug)]
pub enum Probe {
    Answer(String),
    Failed(io::Error),
    NoAnswer,
}

/// Reads `<mountpoint>/.wcfs/zurl` on a thread of its own, waiting at most
/// `timeout` (see the module doc for why a thread).
pub fn probe(mountpoint: &Path, timeout: Duration) -> Probe {
    let path = mountpoint.join(".wcfs/zurl");
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("wcfs-probe".into())
        .spawn(move || {
            let _ = tx.send(fs::read_to_string(path));
        });
    if let Err(e) = spawned {
        return Probe::Failed(e);
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(s)) => Probe::Answer(s),
        Ok(Err(e)) => Probe::Failed(e),
        Err(_) => Probe::NoAnswer,
    }
}

/// Detaches the mount at `path` (lazily: processes still using it keep
/// what they hold, and it goes away when they let go). Non-root: through
/// fusermount3, which does the same with `-z`.
pub fn lazy_unmount(path: &Path) -> io::Result<()> {
    let cpath = cstring(path)?;
    // SAFETY: umount2 with a valid NUL-terminated path and a flag.
    let rc = unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let out = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "-q"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fusermount3 -u -z: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Aborts FUSE connection `conn`: every request in flight and every later
/// one fails with ENOTCONN, and the daemon's reads of /dev/fuse fail.
/// Mounts fusectl first when it is not (needs root).
pub fn abort_conn(conn: u64) -> io::Result<()> {
    let abort = PathBuf::from(format!("{FUSECTL}/{conn}/abort"));
    if !abort.exists() {
        let mounted = mount_at(Path::new(FUSECTL))?.is_some_and(|m| m.fstype == "fusectl");
        if !mounted {
            let (src, dir) = (cstring(Path::new("fusectl"))?, cstring(Path::new(FUSECTL))?);
            // SAFETY: mount(2) with valid NUL-terminated strings, no data.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dir.as_ptr(),
                    src.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("mount fusectl at {FUSECTL}: {e}"),
                ));
            }
        }
    }
    fs::write(&abort, "1")
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", abort.display())))
}

/// Sends `sig` to `pid`; a process already gone is fine.
pub fn signal(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory effects.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Polls `done` every few milliseconds until it holds or `timeout` passes;
/// whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn cstring(p: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with NUL"))
}

/// An exclusive `flock` on a file, released on drop (or when the process
/// dies: a crashed starter never blocks the others).
pub struct FileLock {
    file: fs::File,
}

impl FileLock {
    /// Takes the lock on `path` (created if missing), waiting at most
    /// `timeout`. Opening an existing file does not need write access, so
    /// a lock file created by another user works too.
    pub fn acquire(path: &Path, timeout: Duration) -> io::Result<Option<FileLock>> {
        let file = open_shared_file(path, 0o666)?;
        let fd = file.as_raw_fd();
        let got = wait_until(timeout, || {
            // SAFETY: flock on a descriptor we own.
            unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0 }
        });
        Ok(got.then_some(FileLock { file }))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor; closing it would too.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Opens `path` for reading, creating it with `mode` if missing. In a
/// sticky world-writable directory, `O_CREAT` on another user's existing
/// file may be refused (fs.protected_regular), hence open first, create
/// only if missing.
pub fn open_shared_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    loop {
        match fs::File::open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
        {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The last `max_lines` lines of `path` from byte `from` on.
pub fn tail(path: &Path, from: u64, max_lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    use std::io::Seek;
    if f.seek(io::SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(1 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            "44 27 0:41 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:5 - fuse.wcfs \
             file:///tmp/x\\040y/data.fs rw,user_id=0,group_id=0",
        )
        .unwrap();
        assert_eq!(m.mountpoint, "/tmp/a b");
        assert_eq!(m.fstype, "fuse.wcfs");
        assert_eq!(m.source, "file:///tmp/x y/data.fs");
        assert_eq!(m.fuse_conn(), 41);
        let m = parse_mountinfo_line("1 2 259:3 / /x rw - ext4 /dev/nvme0n1p3 rw").unwrap();
        assert_eq!(m.fuse_conn(), (259 << 20) | 3);
        assert!(parse_mountinfo_line("garbage").is_none());
        assert!(parse_mountinfo_line("1 2 0:4 / /x rw -").is_none());
        assert_eq!(unescape_mountinfo(r"/x\011y\134"), "/x\ty\\");
        assert_eq!(unescape_mountinfo(r"/x\01"), r"/x\01");
    }

    #[test]
    fn proc_state_of_self_and_nobody() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!stopped(me));
        // pid_max is at most 2^22: this pid cannot exist.
        assert_eq!(proc_state(1 << 23), None);
        assert!(!alive(1 << 23));
    }
}
