//! Where the wcfsd serving a zurl lives, and how to join, start, check and
//! stop it.
//!
//! Shared by the client library (`wcfs_join`) and by `wcfsd
//! serve|start|status|stop`, so that both agree on the one place a zurl is
//! served: the mountpoint `/dev/shm/wcfs/<sha1 hex of the zurl>` (SPEC §7),
//! its parent created with mode 1777 so that every user can join. Next to
//! the mountpoint live `<sha1>.lock` (serializes starting and stopping)
//! and `<sha1>.log` (the log of daemons started in the background).
//! `$WCFS_MOUNT_ROOT` names another mount root ([`Config::mount_root`]):
//! for tests, which must not touch the machine's.
//!
//! # A directory everyone can write to
//!
//! Because every user may create names in the mount root, nothing found
//! there is trusted that we did not create: the root must be a real
//! directory of root's or ours, sticky if others may write to it; the
//! mountpoint our own directory; the lock and the log regular files of
//! ours (or root's) with a single link. They are made and opened relative
//! to a checked descriptor of the root, without following links, created
//! exclusively, and checked on what was opened. Anything else —
//! a symbolic link to `/etc`, a hard link to a file of root's, another
//! user's directory, a FIFO — is refused ([`Error::Unsafe`], naming the
//! path and the reason) before anything is mounted, written or removed
//! through it. The rules, and why a name once checked stays ours until
//! the mount, are in the `place` module. The zurl never reaches a path:
//! the names are the SHA-1 of the zurl; it is shown escaped (see
//! [`shown`]) wherever it is printed or logged.
//!
//! # Users
//!
//! Whoever runs the lifecycle — root or an ordinary user — starts a daemon
//! of their own, mounted through `fusermount3` for an ordinary user. A
//! FUSE mount without `allow_other` answers only its owner (not even
//! root): another user who finds it ([`State::OtherUser`], from the
//! mount's `user_id`) gets a clear error ([`Error::OtherUser`]) instead of
//! a probe that fails with `EACCES`; only root may stop it for them.
//!
//! # What is there
//!
//! [`status`] looks, without changing anything, and classifies what it
//! finds ([`State`]):
//!
//! - nothing mounted at the mountpoint: *absent*;
//! - a mount that is not `fuse.wcfs` with source exactly the zurl (SPEC
//!   §4): *foreign* — never touched;
//! - ours, and `.wcfs/zurl` reads back the zurl: *healthy*;
//! - ours, reads fail with `ENOTCONN` (or `ECONNABORTED`: a read queued
//!   as the connection was aborted): *dead* — the daemon crashed or was
//!   killed and left its mount behind;
//! - ours, no answer within the probe timeout, or the daemon process is
//!   stopped (SIGSTOP): *stuck*;
//! - ours, answering something else or failing otherwise: *unhealthy*;
//! - ours but mounted by another user: *another user's* — not probed
//!   (their mount answers nobody else).
//!
//! The daemon process is found through its `/dev/fuse` descriptors (SPEC
//! §4: the daemon keeps them itself): the FUSE connection number is the
//! kernel encoding of the mount's `major:minor`, which the fdinfo of each
//! `/dev/fuse` descriptor names (`fuse_connection`); on kernels that don't
//! say, the process holding `/dev/fuse` whose arguments include the zurl.
//!
//! # Starting
//!
//! [`start`] (and [`join`] with autostart) runs under the lock, so that of
//! many processes joining at once exactly one starts the daemon and the
//! others find it healthy once they get the lock. Under the lock it
//! re-checks: healthy → done; dead → lazy-unmount the leftover (and kill
//! the process if one still holds the aborted connection); stuck,
//! unhealthy, foreign or another user's → error (a daemon that is slow is not ours to kill
//! behind its clients' backs: `wcfsd stop` does that on request). Then it
//! starts `wcfsd [args] ZURL MOUNTPOINT` detached — double fork, `setsid`,
//! cwd `/`, stdin `/dev/null`, stdout and stderr appended to `<sha1>.log`
//! — so that the daemon outlives the caller, is not its child (no zombie
//! in a long-lived application) and keeps no terminal. It waits until
//! `.wcfs/zurl` reads back the zurl, the daemon exits (error with the tail
//! of its log, read from the descriptor we appended through), or the start
//! timeout passes (the daemon is killed, error). The daemon checks the
//! mountpoint once more right before it mounts ([`check_mountpoint`]).
//!
//! Which binary: [`Config::wcfsd`] if given; else `$WCFS_WCFSD`; else
//! `wcfsd` next to the shared object holding this code (libwcfs.so: the
//! Python wheel bundles both in one directory), or in the `bin/` of the
//! prefix it is installed in — `../bin` from `<prefix>/lib`, `../../bin`
//! from a multiarch `<prefix>/lib/<triplet>` (Debian's packages:
//! `/usr/lib/x86_64-linux-gnu` and `/usr/bin`); else `wcfsd` next to the
//! running executable; else the first `wcfsd` on `$PATH`. The daemon
//! installed with the library comes first: a program's own directory may
//! hold another one (Python in a venv runs `/usr/bin/python3`, beside a
//! system-wide wcfsd), and the lookups by location work where `$PATH` is
//! minimal (services, cron).
//!
//! Autostarted daemons (join) run with `-autoexit`: nobody asked for a
//! long-lived server, so it goes away once its last client has been idle
//! for the idle period (30 s by default), and a later join starts a new
//! one. `wcfsd start` passes exactly the options it was given.
//!
//! # Stopping
//!
//! [`stop`]: a healthy (or unhealthy but answering) daemon gets SIGTERM,
//! after which it unmounts and exits by itself; if it has not within the
//! grace period, or it is stuck or dead to begin with, the FUSE connection
//! is aborted (`/sys/fs/fuse/connections/<N>/abort`, mounting fusectl if
//! needed and we are root — every request in flight then fails with
//! ENOTCONN instead of hanging), the process is SIGKILLed (which also ends
//! a SIGSTOPped one) and the mount is detached lazily (never through a
//! symbolic link; `fusermount3 -u -z` for an ordinary user). An ordinary
//! user stops only their own daemon; root may stop anyone's. A lock file
//! that is not ours does not keep a stop from working: it goes on without
//! the lock, as it does when the lock is held too long.
//!
//! # Foreground serving
//!
//! `wcfsd serve ZURL` runs the daemon in the calling process, as upstream's
//! `wcfs serve` does: [`prepare_serve`] does the same checks and cleanup
//! as a start, under the lock, and [`ServeSlot::release_when_ready`] keeps
//! the lock until the new mount answers, so that a concurrent join waits
//! for it instead of starting a second daemon.
//!
//! # Blocking
//!
//! Every wait is bounded (see [`Config`]); the one filesystem call on the
//! mount — the probe — runs in a detached process that is abandoned at
//! its deadline (see [`sys::probe`]): a request the daemon took and never
//! answers leaves its caller unkillable until the connection is aborted,
//! and that must not be us.

mod error;
mod place;
pub mod sys;

pub use error::Error;
pub use place::check_mountpoint;

use place::{Kind, Root};
use std::borrow::Cow;
use std::ffi::{CStr, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use sys::{FileLock, Probe};

/// The directory under which joined daemons are mounted, unless
/// [`MOUNT_ROOT_ENV`] names another.
pub const MOUNT_ROOT: &str = "/dev/shm/wcfs";

/// Environment variable naming another mount root (for tests, which must
/// not touch the machine's; the directories above it must be as safe as
/// `/dev/shm`: see the module doc of `place`).
pub const MOUNT_ROOT_ENV: &str = "WCFS_MOUNT_ROOT";

/// Environment variable naming the wcfsd binary to start.
pub const WCFSD_ENV: &str = "WCFS_WCFSD";

/// The mount root in force: `$WCFS_MOUNT_ROOT` when set (made absolute),
/// else [`MOUNT_ROOT`].
pub fn mount_root() -> PathBuf {
    match std::env::var_os(MOUNT_ROOT_ENV).filter(|v| !v.is_empty()) {
        Some(v) => std::path::absolute(&v).unwrap_or_else(|_| PathBuf::from(v)),
        None => PathBuf::from(MOUNT_ROOT),
    }
}

/// The name of a zurl's mountpoint: the SHA-1 of the zurl in hex, so that
/// nothing of the zurl itself reaches a path.
fn hex_name(zurl: &str) -> String {
    sha1_smol::Sha1::from(zurl.as_bytes()).digest().to_string()
}

/// The mountpoint at which the daemon serving `zurl` is expected (under
/// [`mount_root`]).
pub fn mountpoint_for(zurl: &str) -> PathBuf {
    mount_root().join(hex_name(zurl))
}

/// The lock serializing starts and stops of the daemon of `zurl`.
pub fn lock_path(zurl: &str) -> PathBuf {
    mount_root().join(lock_name(zurl))
}

/// The log of daemons of `zurl` started in the background.
pub fn log_path(zurl: &str) -> PathBuf {
    mount_root().join(log_name(zurl))
}

fn lock_name(zurl: &str) -> String {
    format!("{}.lock", hex_name(zurl))
}

fn log_name(zurl: &str) -> String {
    format!("{}.log", hex_name(zurl))
}

/// A zurl as messages and logs show it: its [`public_zurl`] (no
/// password), as is when every character of it prints plainly, else
/// quoted with escapes (a zurl with a newline, an escape sequence or odd
/// bytes cannot forge a log line).
pub fn shown(zurl: &str) -> Cow<'_, str> {
    let public = public_zurl(zurl);
    let quoted = format!("{public:?}");
    if quoted.len() == public.len() + 2 {
        public
    } else {
        Cow::Owned(quoted)
    }
}

/// What the daemon of `zurl` shows of it: a password in it replaced by
/// `***` (`postgresql://user:***@host/db`; any other zurl as is). It is
/// what `.wcfs/zurl` reads back, the mount source, and the zurl on the
/// daemon's command line when we start it — the zurl itself reaches the
/// daemon through a pipe ([`ZURL_FD_ENV`]). The mountpoint, lock and log
/// are still named by the SHA-1 of the zurl itself.
pub fn public_zurl(zurl: &str) -> Cow<'_, str> {
    zodb::zurl::redacted(zurl)
}

/// Environment variable through which a daemon we start learns the
/// descriptor it reads its zurl from, when the zurl holds a password (its
/// command line has the [`public_zurl`] only: command lines are world
/// readable in `/proc`).
pub const ZURL_FD_ENV: &str = "WCFS_ZURL_FD";

/// In a daemon started with [`ZURL_FD_ENV`] set: the zurl read from that
/// descriptor (which is then closed, and the variable removed), checked to
/// be the one whose public form `arg` is. None when the variable is not
/// set. Call it before any other thread exists (it changes the
/// environment).
pub fn zurl_from_fd(arg: &str) -> Result<Option<String>, String> {
    use std::os::fd::FromRawFd;
    let Some(v) = std::env::var_os(ZURL_FD_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(ZURL_FD_ENV);
    let fd: i32 = v
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("${ZURL_FD_ENV}={v:?}: not a descriptor number"))?;
    // SAFETY: the starter passed us this descriptor for us alone; we take
    // ownership (it is closed when `f` drops) and nothing else uses it.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let mut zurl = String::new();
    f.read_to_string(&mut zurl)
        .map_err(|e| format!("${ZURL_FD_ENV}: reading descriptor {fd}: {e}"))?;
    if public_zurl(&zurl) != arg {
        return Err(format!(
            "${ZURL_FD_ENV}: the zurl read from descriptor {fd} is not the one on the \
             command line ({})",
            shown(arg)
        ));
    }
    Ok(Some(zurl))
}

/// Stops the daemon of `zurl` (if any) and removes everything of it under
/// the mount root: the mountpoint, the lock and the log — each only if it
/// is ours (see `place`; what is not is left alone and reported). For
/// tests and tear-down scripts only — removing the lock file is safe only
/// while nobody else can be starting or joining this zurl (a process
/// waiting on the old lock and one locking a new file would both go
/// ahead).
pub fn remove_all(zurl: &str, cfg: &Config) -> Result<(), Error> {
    let stopped = stop(zurl, cfg).map(|_| ());
    let root = match Root::open(&cfg.mount_root) {
        Ok(Some(root)) => root,
        Ok(None) => return stopped,
        Err(e) => return stopped.and(Err(e)),
    };
    let mnt = cfg.mountpoint(zurl);
    let mut trouble = stopped.err();
    match sys::mount_at(&mnt) {
        Ok(Some(m)) if is_ours(&m, zurl) => {
            let _ = sys::lazy_unmount(&mnt);
        }
        _ => {}
    }
    let hex = hex_name(zurl);
    // Never look up the mountpoint while something is mounted on it.
    if sys::mount_at(&mnt).ok().flatten().is_none() {
        if let Err(e) = root.remove(OsStr::new(&hex), Kind::Mountpoint) {
            trouble.get_or_insert(e);
        }
    }
    for (name, kind) in [(lock_name(zurl), Kind::Lock), (log_name(zurl), Kind::Log)] {
        if let Err(e) = root.remove(OsStr::new(&name), kind) {
            trouble.get_or_insert(e);
        }
    }
    trouble.map_or(Ok(()), Err)
}

/// How to start the daemon and how long to wait for things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The wcfsd to start; None: looked up (see the module doc).
    pub wcfsd: Option<PathBuf>,
    /// Options given to a started daemon, before ZURL and MOUNTPOINT.
    pub daemon_args: Vec<String>,
    /// How long a started daemon has to serve.
    pub start_timeout: Duration,
    /// How long a daemon has to answer a probe before it is called stuck.
    pub probe_timeout: Duration,
    /// How long `stop` waits after SIGTERM before killing, and after
    /// killing for the process to be gone.
    pub stop_grace: Duration,
    /// Where mountpoints, locks and logs live: [`mount_root`] by default.
    pub mount_root: PathBuf,
}

impl Default for Config {
    /// No daemon options (`wcfsd start`); 30 s to start, 5 s to answer,
    /// 10 s to stop.
    fn default() -> Config {
        Config {
            wcfsd: None,
            daemon_args: Vec::new(),
            start_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(5),
            stop_grace: Duration::from_secs(10),
            mount_root: mount_root(),
        }
    }
}

impl Config {
    /// What [`join`] uses: the defaults, the daemon started with
    /// `-autoexit`.
    pub fn for_join() -> Config {
        Config {
            daemon_args: vec!["-autoexit".into()],
            ..Config::default()
        }
    }

    /// The mountpoint of `zurl` under this configuration's mount root.
    pub fn mountpoint(&self, zurl: &str) -> PathBuf {
        self.mount_root.join(hex_name(zurl))
    }

    /// The lock of `zurl` under this configuration's mount root.
    pub fn lock_path(&self, zurl: &str) -> PathBuf {
        self.mount_root.join(lock_name(zurl))
    }

    /// The log of `zurl` under this configuration's mount root.
    pub fn log_path(&self, zurl: &str) -> PathBuf {
        self.mount_root.join(log_name(zurl))
    }

    /// Longest a start can hold the lock: others wait this long for it.
    fn lock_timeout(&self) -> Duration {
        self.start_timeout + self.probe_timeout + self.stop_grace + Duration::from_secs(5)
    }
}

/// What is at a zurl's mountpoint (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Absent,
    Healthy,
    Dead,
    Stuck(String),
    Unhealthy(String),
    Foreign(String),
    /// The wcfsd of this zurl, but mounted by another user (this uid): its
    /// mount is private to that user (no `allow_other`).
    OtherUser(u32),
}

/// The daemon of a zurl as [`status`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub zurl: String,
    pub mountpoint: PathBuf,
    pub state: State,
    /// The daemon process, when one holds the mount's FUSE connection.
    pub pid: Option<u32>,
    /// The FUSE connection number of the mount, when ours is mounted.
    pub conn: Option<u64>,
}

impl Status {
    pub fn is_healthy(&self) -> bool {
        self.state == State::Healthy
    }

    /// One line saying what was found.
    pub fn summary(&self) -> String {
        let mnt = self.mountpoint.display();
        let pid = self.pid.map_or(String::new(), |p| format!(" (pid {p})"));
        let zurl = shown(&self.zurl);
        match &self.state {
            State::Absent => format!("{}: not running (nothing mounted at {mnt})", zurl),
            State::Healthy => format!("{}: healthy: served at {mnt}{pid}", zurl),
            State::Dead => format!(
                "{}: dead: the daemon is gone, its mount at {mnt} answers ENOTCONN",
                zurl
            ),
            State::Stuck(why) => format!("{}: stuck{pid}: {why}", zurl),
            State::Unhealthy(why) => format!("{}: unhealthy{pid}: {why}", zurl),
            State::Foreign(what) => format!("{}: {mnt} has {what} mounted on it", zurl),
            State::OtherUser(uid) => format!(
                "{}: served at {mnt} by the wcfsd of uid {uid}{pid}, whose mount only \
                 that user can use",
                zurl
            ),
        }
    }

    /// The error a join gets for this state (not meaningful for healthy).
    fn to_error(&self) -> Error {
        let (zurl, mountpoint) = (self.zurl.clone(), self.mountpoint.clone());
        match &self.state {
            State::Absent | State::Healthy => Error::NotServing { zurl, mountpoint },
            State::Dead => Error::Dead { zurl, mountpoint },
            State::Stuck(why) => Error::Stuck {
                zurl,
                mountpoint,
                why: why.clone(),
            },
            State::Unhealthy(why) => Error::Unhealthy {
                zurl,
                mountpoint,
                why: why.clone(),
            },
            State::Foreign(what) => Error::Foreign {
                zurl,
                mountpoint,
                what: what.clone(),
            },
            State::OtherUser(uid) => Error::OtherUser {
                zurl,
                mountpoint,
                uid: *uid,
            },
        }
    }
}

/// Refuses what cannot be a zurl before it names a mountpoint or reaches
/// a command line (the daemon says what else is wrong with it).
fn check_zurl(zurl: &str) -> Result<(), Error> {
    if zurl.trim().is_empty() || zurl.contains(['\0', '\n']) {
        return Err(Error::BadZurl {
            zurl: zurl.to_string(),
        });
    }
    Ok(())
}

/// Whether `m` is the mount of the wcfsd of `zurl` (SPEC §4: type
/// `fuse.wcfs`, source exactly the zurl — its [`public_zurl`]).
fn is_ours(m: &sys::MountEntry, zurl: &str) -> bool {
    m.fstype == "fuse.wcfs" && m.source == public_zurl(zurl)
}

/// Whether `.wcfs/zurl` read `s`, which the daemon of `zurl` answers.
fn answers(s: &str, zurl: &str) -> bool {
    s == public_zurl(zurl)
}

/// Looks at the mountpoint of `zurl` and says what serves there, probing
/// the daemon with the default timeout.
pub fn status(zurl: &str) -> Result<Status, Error> {
    status_in(zurl, &Config::default())
}

/// [`status`] with a probe timeout.
pub fn status_with(zurl: &str, probe_timeout: Duration) -> Result<Status, Error> {
    status_in(
        zurl,
        &Config {
            probe_timeout,
            ..Config::default()
        },
    )
}

/// [`status`] under a configuration (its mount root and probe timeout).
/// A mount root or a mountpoint that is not ours (see `place`) is an
/// error, not a state.
pub fn status_in(zurl: &str, cfg: &Config) -> Result<Status, Error> {
    let mountpoint = cfg.mountpoint(zurl);
    let mut st = Status {
        zurl: zurl.to_string(),
        mountpoint: mountpoint.clone(),
        state: State::Absent,
        pid: None,
        conn: None,
    };
    let Some(root) = Root::open(&cfg.mount_root)? else {
        return Ok(st);
    };
    let mount = sys::mount_at(&mountpoint).map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    let Some(m) = mount else {
        // Nothing mounted: whatever has the name must be ours.
        root.inspect(OsStr::new(&hex_name(zurl)), Kind::Mountpoint)?;
        return Ok(st);
    };
    if !is_ours(&m, zurl) {
        st.state = State::Foreign(format!("a {} mount of {:?}", m.fstype, m.source));
        return Ok(st);
    }
    let conn = m.fuse_conn();
    st.conn = Some(conn);
    st.pid = sys::find_server(conn, zurl, &mountpoint);
    if let Some(uid) = m.user_id.filter(|&u| u != sys::euid()) {
        // Its mount answers nobody else (not even root): no probe.
        st.state = State::OtherUser(uid);
        return Ok(st);
    }
    if let Some(pid) = st.pid {
        if sys::stopped(pid) {
            st.state = State::Stuck(format!("daemon pid {pid} is stopped (SIGSTOP?)"));
            return Ok(st);
        }
    }
    let probe_timeout = cfg.probe_timeout;
    st.state = classify(sys::probe(&mountpoint, probe_timeout), zurl, probe_timeout);
    Ok(st)
}

/// The state of our mount from what a read of `.wcfs/zurl` got.
///
/// A dead connection fails a read with `ENOTCONN` — or with `ECONNABORTED`
/// when the read was already queued as the connection was aborted: the
/// last thread of a killed daemon closing `/dev/fuse` (its main thread may
/// already be a zombie then, so a caller that waited for it to be gone can
/// get there first), or an abort through fusectl. Either way nothing will
/// ever answer on that connection again: dead.
fn classify(probe: Probe, zurl: &str, probe_timeout: Duration) -> State {
    match probe {
        Probe::Answer(s) if answers(&s, zurl) => State::Healthy,
        Probe::Answer(s) => State::Unhealthy(format!(".wcfs/zurl reads {s:?}")),
        Probe::Failed(e)
            if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) =>
        {
            State::Dead
        }
        Probe::Failed(e) => State::Unhealthy(format!("reading .wcfs/zurl: {e}")),
        Probe::NoAnswer => State::Stuck(format!(
            "no answer to a read of .wcfs/zurl within {:.1}s",
            probe_timeout.as_secs_f64()
        )),
    }
}

/// Joins the daemon serving `zurl`: the mountpoint of a healthy one,
/// started (with `-autoexit`) when none serves and `autostart` is set,
/// also over a dead mount. See the module doc.
pub fn join(zurl: &str, autostart: bool) -> Result<PathBuf, Error> {
    join_with(zurl, autostart, &Config::for_join())
}

/// [`join`] with a configuration.
pub fn join_with(zurl: &str, autostart: bool, cfg: &Config) -> Result<PathBuf, Error> {
    check_zurl(zurl)?;
    // The common case needs no lock: a daemon already serving.
    let st = status_in(zurl, cfg)?;
    if st.is_healthy() {
        return Ok(st.mountpoint);
    }
    if !autostart {
        return Err(st.to_error());
    }
    start(zurl, cfg).map(|s| s.mountpoint)
}

/// What [`start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub mountpoint: PathBuf,
    /// The serving daemon (when found).
    pub pid: Option<u32>,
    /// Whether it was already serving (we started nothing).
    pub already: bool,
    /// Whether a dead mount was cleaned up first.
    pub cleaned_dead: bool,
}

/// Makes sure a daemon serves `zurl` at its mountpoint: returns the one
/// that does, or starts one in the background and waits until it serves.
pub fn start(zurl: &str, cfg: &Config) -> Result<Started, Error> {
    check_zurl(zurl)?;
    let prep = prepare(zurl, cfg)?;
    let mountpoint = prep.mountpoint.clone();
    if let Some(pid) = prep.healthy {
        return Ok(Started {
            mountpoint,
            pid,
            already: true,
            cleaned_dead: false,
        });
    }
    let bin = wcfsd_binary(cfg)?;
    let logpath = cfg.log_path(zurl);
    let (log, log_from) = open_log(&prep.root, &bin, cfg, zurl)?;
    // What we read the tail from: the log we opened, not its name again.
    let log_reader = log.as_ref().and_then(|f| f.try_clone().ok());
    let mut args: Vec<OsString> = cfg.daemon_args.iter().map(OsString::from).collect();
    // A password never reaches a command line: the daemon gets the public
    // form there, and the zurl itself through a pipe.
    let public = public_zurl(zurl);
    let secret = (public != zurl).then_some(zurl);
    args.push(public.as_ref().into());
    args.push(mountpoint.clone().into_os_string());
    let pid = spawn_detached(&bin, &args, log, secret)
        .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
    let failed = |why: String, timed_out: bool| Error::StartFailed {
        zurl: zurl.to_string(),
        why,
        log: logpath.clone(),
        log_tail: log_reader
            .as_ref()
            .map_or(String::new(), |f| sys::tail(f, log_from, 20)),
        timed_out,
    };
    let deadline = Instant::now() + cfg.start_timeout;
    loop {
        let mount = sys::mount_at(&mountpoint).map_err(|e| Error::io("/proc/self/mountinfo", e))?;
        if let Some(m) = mount.filter(|m| is_ours(m, zurl)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match sys::probe(&mountpoint, left.max(Duration::from_millis(100))) {
                Probe::Answer(s) if answers(&s, zurl) => {
                    return Ok(Started {
                        mountpoint,
                        pid: Some(pid),
                        already: false,
                        cleaned_dead: prep.cleaned_dead,
                    })
                }
                Probe::Answer(s) => {
                    kill_and_detach(Some(pid), Some(m.fuse_conn()), &mountpoint);
                    return Err(failed(format!(".wcfs/zurl reads {s:?}"), false));
                }
                Probe::Failed(_) | Probe::NoAnswer => {}
            }
        }
        if !sys::alive(pid) {
            // It may have mounted and died: leave no dead mount behind.
            if sys::mount_at(&mountpoint)
                .ok()
                .flatten()
                .is_some_and(|m| is_ours(&m, zurl))
            {
                let _ = sys::lazy_unmount(&mountpoint);
            }
            return Err(failed(
                format!("wcfsd (pid {pid}) exited before serving"),
                false,
            ));
        }
        if Instant::now() >= deadline {
            let conn = sys::mount_at(&mountpoint)
                .ok()
                .flatten()
                .filter(|m| is_ours(m, zurl))
                .map(|m| m.fuse_conn());
            kill_and_detach(Some(pid), conn, &mountpoint);
            return Err(failed(
                format!(
                    "not serving after {:.0}s; killed it",
                    cfg.start_timeout.as_secs_f64()
                ),
                true,
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The outcome of the checks before serving, done under the lock.
struct Prepared {
    mountpoint: PathBuf,
    /// Some(pid) when a healthy daemon already serves.
    healthy: Option<Option<u32>>,
    cleaned_dead: bool,
    lock: FileLock,
    root: Root,
}

/// Under the lock: a healthy daemon → report it; dead → clean up; stuck,
/// unhealthy, foreign, another user's → error; then the mountpoint exists,
/// is ours and is free.
fn prepare(zurl: &str, cfg: &Config) -> Result<Prepared, Error> {
    let root = Root::create(&cfg.mount_root)?;
    // Another user's daemon: say so, rather than refuse its lock file.
    let st = status_in(zurl, cfg)?;
    if let State::OtherUser(_) = st.state {
        return Err(st.to_error());
    }
    let lock = take_lock(&root, zurl, cfg)?.ok_or(Error::LockTimeout {
        lock: cfg.lock_path(zurl),
    })?;
    let st = status_in(zurl, cfg)?;
    let mut cleaned_dead = false;
    match st.state {
        State::Healthy => {
            return Ok(Prepared {
                mountpoint: st.mountpoint,
                healthy: Some(st.pid),
                cleaned_dead,
                lock,
                root,
            })
        }
        State::Dead => {
            clean_dead(&st)?;
            cleaned_dead = true;
        }
        State::Absent => {}
        State::Stuck(_) | State::Unhealthy(_) | State::Foreign(_) | State::OtherUser(_) => {
            return Err(st.to_error())
        }
    }
    let mountpoint = root.make_mountpoint(OsStr::new(&hex_name(zurl)))?;
    Ok(Prepared {
        mountpoint,
        healthy: None,
        cleaned_dead,
        lock,
        root,
    })
}

/// The lock of `zurl`, waiting at most the lock timeout (None: timed out).
fn take_lock(root: &Root, zurl: &str, cfg: &Config) -> Result<Option<FileLock>, Error> {
    let file = root.open_lock(OsStr::new(&lock_name(zurl)))?;
    Ok(FileLock::acquire(file, cfg.lock_timeout()))
}

/// A dead mount: whatever process still holds the aborted connection is
/// killed, and the mount detached.
fn clean_dead(st: &Status) -> Result<(), Error> {
    if let Some(pid) = st.pid {
        let _ = sys::signal(pid, libc::SIGKILL);
    }
    match sys::lazy_unmount(&st.mountpoint) {
        Ok(()) => Ok(()),
        // Someone else detached it meanwhile.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) => Err(Error::io(
            format!("unmounting the dead mount at {}", st.mountpoint.display()),
            e,
        )),
    }
}

/// The blunt end: abort the connection (requests in flight fail instead of
/// hanging), kill the process, detach the mount. Best effort, each step.
fn kill_and_detach(pid: Option<u32>, conn: Option<u64>, mountpoint: &Path) -> Vec<String> {
    let mut trouble = Vec::new();
    // Only while the mount is still on that connection: once it is gone
    // (the daemon ended after all) the number may already name another
    // FUSE mount, which an abort would break.
    let conn = conn.filter(|&c| {
        sys::mount_at(mountpoint)
            .ok()
            .flatten()
            .is_some_and(|m| m.fuse_conn() == c)
    });
    if let Some(conn) = conn {
        if let Err(e) = sys::abort_conn(conn) {
            trouble.push(format!("abort connection {conn}: {e}"));
        }
    }
    if let Some(pid) = pid {
        if let Err(e) = sys::signal(pid, libc::SIGKILL) {
            trouble.push(format!("kill {pid}: {e}"));
        }
    }
    if sys::mount_at(mountpoint).ok().flatten().is_some() {
        if let Err(e) = sys::lazy_unmount(mountpoint) {
            trouble.push(format!("unmount {}: {e}", mountpoint.display()));
        }
    }
    trouble
}

/// Creates the mount root ([`mount_root`]) with mode 1777 if missing
/// (every user can join; the sticky bit keeps them from removing or
/// renaming each other's entries), and checks it (see `place`).
pub fn ensure_root() -> Result<(), Error> {
    Root::create(&mount_root()).map(|_| ())
}

/// The wcfsd binary to start (see the module doc for the order).
pub fn wcfsd_binary(cfg: &Config) -> Result<PathBuf, Error> {
    if let Some(p) = &cfg.wcfsd {
        return if is_executable(p) {
            Ok(p.clone())
        } else {
            Err(Error::NoDaemonBinary {
                tried: format!("{} (given)", p.display()),
            })
        };
    }
    if let Some(p) = std::env::var_os(WCFSD_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::NoDaemonBinary {
                tried: format!("${WCFSD_ENV}={}, not an executable file", p.display()),
            })
        };
    }
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if let Some(dir) = this_object_dir() {
        candidates.extend(near_library(&dir));
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| parent(&e)) {
        candidates.push(dir.join("wcfsd"));
    }
    for p in candidates {
        if is_executable(&p) {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("wcfsd");
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    tried.push("wcfsd on $PATH".into());
    Err(Error::NoDaemonBinary {
        tried: format!("${WCFSD_ENV} (unset), {}", tried.join(", ")),
    })
}

/// Where a wcfsd installed with a library in `dir` is: beside it, or in
/// the `bin/` of its prefix (`dir` = `<prefix>/lib`, or the multiarch
/// `<prefix>/lib/<triplet>`).
fn near_library(dir: &Path) -> Vec<PathBuf> {
    let mut near = vec![dir.join("wcfsd"), dir.join("../bin/wcfsd")];
    if dir.parent().and_then(Path::file_name) == Some(OsStr::new("lib")) {
        near.push(dir.join("../../bin/wcfsd"));
    }
    near
}

fn parent(p: &Path) -> Option<PathBuf> {
    p.parent().map(Path::to_path_buf)
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The directory of the shared object (or executable) this code is in:
/// libwcfs.so loaded by Python finds the wcfsd installed with it.
fn this_object_dir() -> Option<PathBuf> {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`; the name it
    // returns is a NUL-terminated string owned by the loader, valid while
    // the object is loaded (we are in it), and copied at once.
    let name = unsafe {
        if libc::dladdr(this_object_dir as *const libc::c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return None;
        }
        CStr::from_ptr(info.dli_fname).to_bytes().to_vec()
    };
    let path = PathBuf::from(OsStr::from_bytes(&name));
    if !path.is_absolute() {
        return None;
    }
    // The real location: the loader may name the library through a
    // symlinked directory (`/lib` → `usr/lib` on merged-/usr systems), and
    // its prefix's bin/ is beside the real one.
    parent(&fs::canonicalize(&path).unwrap_or(path))
}

/// Opens the log for a started daemon (appending) and writes a header;
/// returns it with the offset the new daemon's lines start at. None (the
/// daemon's output is dropped) when we may not write to it; a log that is
/// not ours (see `place`) is an error.
fn open_log(
    root: &Root,
    bin: &Path,
    cfg: &Config,
    zurl: &str,
) -> Result<(Option<fs::File>, u64), Error> {
    let Some(mut f) = root.open_log(OsStr::new(&log_name(zurl)))? else {
        return Ok((None, 0));
    };
    let from = f.metadata().map(|m| m.len()).unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let _ = writeln!(
        f,
        "--- unix time {now}: pid {} starts {} {} {} {}",
        std::process::id(),
        bin.display(),
        cfg.daemon_args.join(" "),
        shown(zurl),
        cfg.mountpoint(zurl).display()
    );
    Ok((Some(f), from))
}

/// Starts `bin args` detached from us: a double fork (the daemon is the
/// grandchild, so it is not our child and never our zombie), in a session
/// of its own, cwd `/`, stdin `/dev/null`, stdout/stderr to `log`. With a
/// `secret` (a zurl holding a password), the daemon inherits one more
/// descriptor, the read end of a pipe holding it, named by
/// [`ZURL_FD_ENV`]. Returns the daemon's pid.
fn spawn_detached(
    bin: &Path,
    args: &[OsString],
    log: Option<fs::File>,
    secret: Option<&str>,
) -> io::Result<u32> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array with new descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wr_raw = wr.as_raw_fd();
    let zurl_fd = secret.map(secret_pipe).transpose()?;
    let zurl_raw = zurl_fd.as_ref().map(|f| f.as_raw_fd());
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir("/").stdin(Stdio::null());
    if let Some(fd) = zurl_raw {
        cmd.env(ZURL_FD_ENV, fd.to_string());
    } else {
        cmd.env_remove(ZURL_FD_ENV);
    }
    match log {
        Some(f) => {
            cmd.stdout(f.try_clone()?).stderr(f);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    // SAFETY: runs between fork and exec in the child of a possibly
    // multi-threaded process, so only async-signal-safe calls: fork,
    // setsid, getpid, write, fcntl, _exit. The intermediate child exits at
    // once; the grandchild reports its pid through the (close-on-exec)
    // pipe, lets the zurl's descriptor (if any) survive the exec, and goes
    // on to exec. An exec failure still reaches `spawn` through std's own
    // close-on-exec pipe, which the grandchild holds.
    unsafe {
        cmd.pre_exec(move || match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                libc::setsid();
                if let Some(fd) = zurl_raw {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                let pid = libc::getpid().to_ne_bytes();
                libc::write(wr_raw, pid.as_ptr().cast(), pid.len());
                Ok(())
            }
            _ => libc::_exit(0),
        });
    }
    let mut intermediate = cmd.spawn()?;
    drop(wr);
    drop(zurl_fd);
    let _ = intermediate.wait();
    let mut pid = [0u8; 4];
    fs::File::from(rd).read_exact(&mut pid)?;
    Ok(i32::from_ne_bytes(pid) as u32)
}

/// The read end of a pipe (close-on-exec, descriptor ≥ 3) holding
/// `secret`, written whole and closed at the write end: the reader gets it
/// and then end of file.
fn secret_pipe(secret: &str) -> io::Result<OwnedFd> {
    // A pipe holds 64 KiB before a write would wait for a reader.
    if secret.len() >= 60 << 10 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "zurl too long (60 KiB at most)",
        ));
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array with new descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    fs::File::from(wr).write_all(secret.as_bytes())?;
    // Above stdin/stdout/stderr, which the child's are dup2'ed onto.
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor (≥ 3) of ours.
    let fd = unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopHow {
    /// Nothing was mounted there.
    NotRunning,
    /// The daemon unmounted and exited on SIGTERM.
    Graceful,
    /// It was stuck (or ignored SIGTERM): connection aborted, killed,
    /// mount detached.
    Killed,
    /// It was dead already: its mount was detached.
    CleanedDead,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub mountpoint: PathBuf,
    pub pid: Option<u32>,
    pub how: StopHow,
}

/// Stops the daemon of `zurl` (see the module doc): afterwards nothing is
/// mounted at its mountpoint and the daemon process is gone.
pub fn stop(zurl: &str, cfg: &Config) -> Result<Stopped, Error> {
    // The lock keeps a starter from racing us; but a stop must work even
    // when whoever holds it is stuck, so after the wait we go on without —
    // as we do when the lock file is not ours (we never use such a file).
    let root = Root::open(&cfg.mount_root)?;
    let _lock = root
        .as_ref()
        .and_then(|r| take_lock(r, zurl, cfg).ok().flatten());
    let st = status_in(zurl, cfg)?;
    let done = |how| Stopped {
        mountpoint: st.mountpoint.clone(),
        pid: st.pid,
        how,
    };
    let ours_mounted = || {
        sys::mount_at(&st.mountpoint)
            .ok()
            .flatten()
            .is_some_and(|m| is_ours(&m, zurl))
    };
    let gone = |pid: Option<u32>| !pid.is_some_and(sys::alive) && !ours_mounted();
    match &st.state {
        State::Absent => return Ok(done(StopHow::NotRunning)),
        State::Foreign(_) => return Err(st.to_error()),
        // Another user's daemon: theirs to stop, or root's.
        State::OtherUser(_) if sys::euid() != 0 => return Err(st.to_error()),
        State::Dead => {
            clean_dead(&st)?;
            if !sys::wait_until(cfg.stop_grace, || gone(st.pid)) {
                return Err(Error::io(
                    format!("stopping the dead daemon of {}", shown(zurl)),
                    io::Error::other("its process or mount is still there"),
                ));
            }
            return Ok(done(StopHow::CleanedDead));
        }
        State::Healthy | State::Unhealthy(_) | State::OtherUser(_) => {
            let asked = match st.pid {
                Some(pid) => sys::signal(pid, libc::SIGTERM).is_ok(),
                // No process to ask: detaching ends the session once unused.
                None => sys::lazy_unmount(&st.mountpoint).is_ok(),
            };
            if asked && sys::wait_until(cfg.stop_grace, || gone(st.pid)) {
                return Ok(done(StopHow::Graceful));
            }
        }
        State::Stuck(_) => {}
    }
    let trouble = kill_and_detach(st.pid, st.conn, &st.mountpoint);
    if sys::wait_until(cfg.stop_grace, || gone(st.pid)) {
        Ok(done(StopHow::Killed))
    } else {
        Err(Error::io(
            format!("stopping the daemon of {} (pid {:?})", shown(zurl), st.pid),
            io::Error::other(format!(
                "still there after abort+kill+unmount{}",
                if trouble.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", trouble.join("; "))
                }
            )),
        ))
    }
}

/// A free mountpoint for a daemon about to serve in this process, with
/// the lock held (see [`prepare_serve`]).
pub struct ServeSlot {
    pub mountpoint: PathBuf,
    lock: FileLock,
}

/// Before `wcfsd serve ZURL` mounts in the foreground: under the lock, a
/// healthy daemon → [`Error::AlreadyServed`]; dead → cleaned up; stuck,
/// unhealthy, foreign → error; else the mountpoint, free, with the lock
/// still held.
pub fn prepare_serve(zurl: &str, cfg: &Config) -> Result<ServeSlot, Error> {
    check_zurl(zurl)?;
    let prep = prepare(zurl, cfg)?;
    if let Some(pid) = prep.healthy {
        return Err(Error::AlreadyServed {
            zurl: zurl.to_string(),
            mountpoint: prep.mountpoint,
            pid,
        });
    }
    Ok(ServeSlot {
        mountpoint: prep.mountpoint,
        lock: prep.lock,
    })
}

impl ServeSlot {
    /// Keeps the lock, on a thread of its own, until this process's mount
    /// answers (or `timeout` passes), then releases it.
    pub fn release_when_ready(self, zurl: &str, timeout: Duration) {
        let zurl = zurl.to_string();
        let spawned = std::thread::Builder::new()
            .name("serve-lock".into())
            .spawn(move || {
                let mnt = &self.mountpoint;
                sys::wait_until(timeout, || {
                    sys::mount_at(mnt)
                        .ok()
                        .flatten()
                        .is_some_and(|m| is_ours(&m, &zurl))
                        && matches!(sys::probe(mnt, Duration::from_secs(1)),
                                    Probe::Answer(s) if answers(&s, &zurl))
                });
                drop(self.lock);
            });
        // Without a thread the lock goes now: a concurrent join might then
        // start a daemon of its own, whose mount the kernel would stack
        // over ours — unlikely enough not to fail serving for.
        drop(spawned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_connection_is_dead() {
        let t = Duration::from_secs(1);
        let failed = |errno| Probe::Failed(std::io::Error::from_raw_os_error(errno));
        let z = "file:///x/data.fs";
        assert_eq!(classify(failed(libc::ENOTCONN), z, t), State::Dead);
        assert_eq!(classify(failed(libc::ECONNABORTED), z, t), State::Dead);
        assert!(matches!(
            classify(failed(libc::EIO), z, t),
            State::Unhealthy(w) if w.contains("reading .wcfs/zurl")
        ));
        assert_eq!(classify(Probe::Answer(z.into()), z, t), State::Healthy);
        assert!(matches!(classify(Probe::NoAnswer, z, t), State::Stuck(_)));
    }

    #[test]
    fn mountpoint_is_sha1_of_zurl() {
        // sha1("abc") is the FIPS 180 test vector.
        assert_eq!(
            mountpoint_for("abc"),
            PathBuf::from("/dev/shm/wcfs/a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            lock_path("abc"),
            PathBuf::from("/dev/shm/wcfs/a9993e364706816aba3e25717850c26c9cd0d89d.lock")
        );
        assert_eq!(
            log_path("abc"),
            PathBuf::from("/dev/shm/wcfs/a9993e364706816aba3e25717850c26c9cd0d89d.log")
        );
    }

    #[test]
    fn zurls_are_shown_escaped() {
        assert_eq!(shown("file:///srv/data.fs"), "file:///srv/data.fs");
        assert_eq!(shown("file:///a b/é.fs"), "file:///a b/é.fs");
        assert_eq!(shown("file:///x\n/y"), r#""file:///x\n/y""#);
        assert_eq!(shown("z\u{1b}[2J"), r#""z\u{1b}[2J""#);
        assert_eq!(shown("a\\b"), r#""a\\b""#);
    }

    #[test]
    fn config_mount_root_places_everything() {
        // ($WCFS_MOUNT_ROOT is exercised through wcfsd in the daemon's
        // lifecycle_shared tests: setting it here would race other tests.)
        let cfg = Config {
            mount_root: "/tmp/elsewhere".into(),
            ..Config::default()
        };
        assert_eq!(
            cfg.mountpoint("abc"),
            PathBuf::from("/tmp/elsewhere/a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            cfg.log_path("abc"),
            PathBuf::from("/tmp/elsewhere/a9993e364706816aba3e25717850c26c9cd0d89d.log")
        );
    }

    #[test]
    fn binary_given_must_be_executable() {
        let cfg = Config {
            wcfsd: Some("/nonexistent/wcfsd".into()),
            ..Config::default()
        };
        let e = wcfsd_binary(&cfg).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.to_string().contains("/nonexistent/wcfsd"), "{e}");
        let cfg = Config {
            wcfsd: Some("/bin/sh".into()),
            ..Config::default()
        };
        assert_eq!(wcfsd_binary(&cfg).unwrap(), PathBuf::from("/bin/sh"));
    }

    #[test]
    fn binary_near_the_library() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            near_library(Path::new("/opt/wcfs/lib")),
            [p("/opt/wcfs/lib/wcfsd"), p("/opt/wcfs/lib/../bin/wcfsd")]
        );
        assert_eq!(
            near_library(Path::new("/usr/lib/x86_64-linux-gnu")),
            [
                p("/usr/lib/x86_64-linux-gnu/wcfsd"),
                p("/usr/lib/x86_64-linux-gnu/../bin/wcfsd"),
                p("/usr/lib/x86_64-linux-gnu/../../bin/wcfsd"),
            ]
        );
        // The Python wheel: libwcfs.so and wcfsd side by side in the package.
        assert_eq!(
            near_library(Path::new("/venv/lib/python3.11/site-packages/wcfs"))[0],
            p("/venv/lib/python3.11/site-packages/wcfs/wcfsd")
        );
    }

    #[test]
    fn binary_from_environment_then_lookup() {
        // The only test here that looks at the variable.
        std::env::set_var(WCFSD_ENV, "/bin/sh");
        assert_eq!(
            wcfsd_binary(&Config::default()).unwrap(),
            PathBuf::from("/bin/sh")
        );
        std::env::set_var(WCFSD_ENV, "/nonexistent/wcfsd");
        let e = wcfsd_binary(&Config::default()).unwrap_err();
        assert!(
            e.to_string().contains("$WCFS_WCFSD=/nonexistent/wcfsd"),
            "{e}"
        );
        std::env::remove_var(WCFSD_ENV);
        match wcfsd_binary(&Config::default()) {
            Ok(p) => assert!(p.ends_with("wcfsd") && is_executable(&p), "{p:?}"),
            Err(e) => assert!(e.to_string().contains("wcfsd on $PATH"), "{e}"),
        }
    }

    #[test]
    fn bad_zurls_are_refused() {
        for z in ["", "  ", "a\0b", "file:///x\n/data.fs"] {
            let e = join_with(z, true, &Config::default()).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{z:?}: {e}");
            assert!(e.to_string().contains("invalid zurl"), "{e}");
        }
    }

    #[test]
    fn status_of_a_zurl_nobody_serves() {
        let zurl = format!("file:///nonexistent/{}/data.fs", std::process::id());
        let st = status(&zurl).unwrap();
        assert_eq!(st.state, State::Absent);
        assert!(st.summary().contains("not running"), "{}", st.summary());
        let e = join_with(&zurl, false, &Config::default()).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.to_string().contains("no wcfsd serves"), "{e}");
    }
}
