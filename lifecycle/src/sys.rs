//! The operating-system facts the lifecycle works from: what is mounted
//! where (`/proc/self/mountinfo`), which process serves a FUSE connection
//! (`/proc/*/fd` + `/proc/*/fdinfo`), whether a mount answers (a probe
//! with a deadline), and the blunt tools for a stuck or dead daemon
//! (fusectl abort, SIGKILL, lazy unmount).
//!
//! Nothing here blocks without a bound: a stuck daemon makes every
//! filesystem call on its mount sleep until it answers, so the only such
//! call — the probe — runs in a detached process of its own and is
//! abandoned at its deadline (see [`probe`] for why not a thread).

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
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
    /// `user_id=` of the superblock options: who mounted a FUSE
    /// filesystem (only that user's processes may use it, unless
    /// `allow_other`).
    pub user_id: Option<u32>,
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
    let user_id = fields.next().and_then(|opts| {
        opts.split(',')
            .find_map(|o| o.strip_prefix("user_id="))
            .and_then(|v| v.parse().ok())
    });
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mountpoint,
        fstype,
        source,
        user_id,
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
            let public = crate::public_zurl(zurl);
            if args.iter().any(|a| a == zurl || *a == public) {
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

/// Longest `.wcfs/zurl` the probe reads; anything longer is no zurl of ours.
const PROBE_MAX: usize = 16 << 10;

/// Reads `<mountpoint>/.wcfs/zurl`, waiting at most `timeout`.
///
/// The read runs in a process of its own, detached from us (a grandchild,
/// holding no descriptor of ours), never on a thread of ours: a FUSE
/// request that the daemon has taken but does not answer (it hangs, or
/// was stopped in the middle) keeps the caller in an uninterruptible
/// sleep, which not even SIGKILL ends, until the daemon answers or the
/// connection is aborted. A thread of ours stuck so would keep this
/// process from exiting, and with it everything that waits for us (a
/// shell's `$(wcfsd status …)`). The prober is abandoned at the deadline
/// instead, and goes away by itself once the daemon answers or dies.
pub fn probe(mountpoint: &Path, timeout: Duration) -> Probe {
    match probe_detached(&mountpoint.join(".wcfs/zurl"), timeout) {
        Ok(p) => p,
        Err(e) => Probe::Failed(e),
    }
}

fn probe_detached(path: &Path, timeout: Duration) -> io::Result<Probe> {
    let cpath = cstring(path)?;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array with new descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child runs only async-signal-safe code (see
    // `probe_child`), as required after fork in a multi-threaded process;
    // everything it uses (path, descriptor) was prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the child of the fork above.
        unsafe { probe_child(cpath.as_ptr(), wr.as_raw_fd()) }
    }
    drop(wr);
    // Reap the intermediate child, which exits at once.
    let mut status = 0;
    // SAFETY: waitpid on our own child, with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Probe::NoAnswer);
        }
        let mut pfd = libc::pollfd {
            fd: rd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(Probe::NoAnswer);
        }
        // SAFETY: read into a buffer we own, within its length.
        let k = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if k < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k as usize]);
    }
    // The prober's report: "0" and the content, or "E" and the errno.
    match got.split_first() {
        Some((b'0', data)) => Ok(Probe::Answer(String::from_utf8_lossy(data).into_owned())),
        Some((b'E', e)) if e.len() == 4 => Ok(Probe::Failed(io::Error::from_raw_os_error(
            i32::from_ne_bytes([e[0], e[1], e[2], e[3]]),
        ))),
        _ => Err(io::Error::other("the probe process died without a report")),
    }
}

/// The child side of [`probe`]: forks the prober and exits; the prober
/// closes every descriptor but `wr`, reads `path` and reports on `wr`.
///
/// # Safety
///
/// Only in the child of a fork. Calls nothing but async-signal-safe
/// system calls and touches no memory but its stack and `path`.
unsafe fn probe_child(path: *const libc::c_char, wr: libc::c_int) -> ! {
    if libc::fork() != 0 {
        libc::_exit(0);
    }
    unsafe fn report_errno(wr: libc::c_int, errno: libc::c_int) -> ! {
        let mut msg = [b'E', 0, 0, 0, 0];
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(wr, msg.as_ptr().cast(), msg.len());
        libc::_exit(1)
    }
    close_all_but(wr);
    let fd = libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        report_errno(wr, *libc::__errno_location());
    }
    let mut buf = [0u8; PROBE_MAX + 1];
    buf[0] = b'0';
    let mut n = 1;
    while n < buf.len() {
        let k = libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n);
        if k < 0 {
            let errno = *libc::__errno_location();
            if errno == libc::EINTR {
                continue;
            }
            report_errno(wr, errno);
        }
        if k == 0 {
            break;
        }
        n += k as usize;
    }
    let mut off = 0;
    while off < n {
        let k = libc::write(wr, buf[off..n].as_ptr().cast(), n - off);
        if k <= 0 {
            break;
        }
        off += k as usize;
    }
    libc::_exit(0)
}

/// Closes every descriptor but `keep` (close_range, Linux ≥ 5.9; else one
/// by one up to the descriptor limit). Async-signal-safe.
///
/// # Safety
///
/// Closes descriptors other code may think it owns: only in a child
/// about to exit.
unsafe fn close_all_but(keep: libc::c_int) {
    let keep = keep as libc::c_uint;
    let mut ok = true;
    if keep > 0 {
        ok &= libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, keep - 1, 0) == 0;
    }
    ok &= libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0) == 0;
    if !ok {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(1 << 16) as libc::c_int
        } else {
            1024
        };
        for fd in 0..max {
            if fd != keep as libc::c_int {
                libc::close(fd);
            }
        }
    }
}

/// The effective uid of this process: whose files and mounts are ours.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no failure mode and no memory effects.
    unsafe { libc::geteuid() }
}

/// Detaches the mount at `path` (lazily: processes still using it keep
/// what they hold, and it goes away when they let go), never following a
/// symbolic link there. Non-root: through fusermount3, which does the
/// same with `-z` (and unmounts only its user's FUSE mounts).
pub fn lazy_unmount(path: &Path) -> io::Result<()> {
    let cpath = cstring(path)?;
    // SAFETY: umount2 with a valid NUL-terminated path and flags.
    let rc = unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
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
/// Mounts fusectl first when it is not — root only; another user can
/// abort the connections of their own mounts once fusectl is mounted (the
/// kernel gives each connection's files to the mount's owner).
pub fn abort_conn(conn: u64) -> io::Result<()> {
    let abort = PathBuf::from(format!("{FUSECTL}/{conn}/abort"));
    if !abort.exists() && euid() == 0 {
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
    /// Takes the lock on `file` (open for reading is enough), waiting at
    /// most `timeout`; None when it timed out.
    pub fn acquire(file: fs::File, timeout: Duration) -> Option<FileLock> {
        let fd = file.as_raw_fd();
        let got = wait_until(timeout, || {
            // SAFETY: flock on a descriptor we own.
            unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0 }
        });
        got.then_some(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor; closing it would too.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The last `max_lines` lines of the file `f` from byte `from` on (read
/// with pread, so the file offset does not matter; a descriptor that
/// cannot be read gives nothing).
pub fn tail(f: &fs::File, from: u64, max_lines: usize) -> String {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], from + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buf.truncate(n);
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
        assert_eq!(m.user_id, Some(0));
        let m = parse_mountinfo_line(
            "50 27 0:45 / /dev/shm/wcfs/ab rw,nosuid,nodev - fuse.wcfs file:///x \
             rw,user_id=65534,group_id=65534",
        )
        .unwrap();
        assert_eq!(m.user_id, Some(65534));
        let m = parse_mountinfo_line("1 2 259:3 / /x rw - ext4 /dev/nvme0n1p3 rw").unwrap();
        assert_eq!(m.fuse_conn(), (259 << 20) | 3);
        assert!(parse_mountinfo_line("garbage").is_none());
        assert!(parse_mountinfo_line("1 2 0:4 / /x rw -").is_none());
        assert_eq!(unescape_mountinfo(r"/x\011y\134"), "/x\ty\\");
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\\"), "/tmp/a b\\\\");
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
