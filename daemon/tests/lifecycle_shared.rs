//! The lifecycle on a shared machine: a local user who plants names under
//! the mount root before we use them gets nothing mounted, written,
//! truncated or removed outside our own files; wcfsd works as an ordinary
//! user (`nobody`), and a second user gets a clear error.
//!
//! The tests run as root and act as the attacker, and as the ordinary
//! user, through `setpriv` (util-linux) and `Command::uid`. None of them
//! touches the machine's `/dev/shm/wcfs`: each has a private mount root
//! (`$WCFS_MOUNT_ROOT`, [`Config::mount_root`]) in a directory of its own
//! under `/dev/shm`, root-owned and mode 1777 like `/dev/shm` itself. A
//! [`Private`] guard kills whatever daemon is still mounted there and
//! removes the directory, also when a test fails.

mod common;

use common::watch::{term_signal, PinMode, RoleChild, WatchLink, ROLE_ENV};
use common::{wcfsd_bin, Env};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};
use wcfs_lifecycle::{self as lifecycle, sys, Config, Error};
use zodb::{Oid, Tid};

const BS: u64 = 4096;
const ENTRY: &str = "shared_child_entry";

/// The ordinary user of these tests.
fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("user nobody exists");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The configuration for joins under the private root `root`.
fn cfg(root: &Path) -> Config {
    Config {
        wcfsd: Some(wcfsd_bin()),
        start_timeout: Duration::from_secs(20),
        probe_timeout: Duration::from_secs(3),
        stop_grace: Duration::from_secs(10),
        mount_root: root.to_path_buf(),
        ..Config::for_join()
    }
}

/// A private directory under /dev/shm (root's, mode 1777) holding the
/// mount root `root` (not created); on drop, every mount under it is
/// aborted and detached, its daemon killed, and the directory removed.
struct Private {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Private {
    fn new() -> Private {
        let dir = tempfile::Builder::new()
            .prefix("wcfs-test-root")
            .tempdir_in("/dev/shm")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let root = dir.path().join("wcfs");
        Private { dir, root }
    }

    /// The mount root made as wcfs makes it: root's, mode 1777.
    fn with_root() -> Private {
        let p = Private::new();
        std::fs::create_dir(&p.root).unwrap();
        std::fs::set_permissions(&p.root, std::fs::Permissions::from_mode(0o1777)).unwrap();
        p
    }

    /// Mounts under our directory (every one is a test's leftover).
    fn mounts(&self) -> Vec<sys::MountEntry> {
        let me = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(sys::parse_mountinfo_line)
            .filter(|m| m.mountpoint.starts_with(&me))
            .collect()
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        for m in self.mounts() {
            let mnt = PathBuf::from(&m.mountpoint);
            if let Some(pid) = sys::find_server(m.fuse_conn(), &m.source, &mnt) {
                let _ = sys::signal(pid, libc::SIGKILL);
            }
            let _ = sys::abort_conn(m.fuse_conn());
            let _ = sys::lazy_unmount(&mnt);
        }
    }
}

/// Files outside the mount root that an attack aims at: a directory with
/// a file in it and a file of root's. [`Victim::assert_untouched`] checks
/// that their content, times and mounts are as they were.
struct Victim {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    file: PathBuf,
    before: Vec<(PathBuf, Vec<u8>, SystemTime, u32)>,
}

impl Victim {
    fn new() -> Victim {
        // On the filesystem of the mount roots, so that a hard link to the
        // file can be planted there.
        let d = tempfile::Builder::new()
            .prefix("wcfs-test-victim")
            .tempdir_in("/dev/shm")
            .unwrap();
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("precious"), b"in the victim dir\n").unwrap();
        let file = d.path().join("file");
        std::fs::write(&file, b"root's precious file\n").unwrap();
        let mut v = Victim {
            _dir: d,
            dir,
            file,
            before: Vec::new(),
        };
        v.before = v.snapshot();
        v
    }

    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>, SystemTime, u32)> {
        let mut s = Vec::new();
        for p in [&self.dir, &self.dir.join("precious"), &self.file] {
            let m = std::fs::symlink_metadata(p).unwrap();
            let content = if m.is_file() {
                std::fs::read(p).unwrap()
            } else {
                let mut names: Vec<Vec<u8>> = std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                    .collect();
                names.sort();
                names.join(&b"/"[..])
            };
            s.push((p.clone(), content, m.modified().unwrap(), m.mode()));
        }
        s
    }

    fn assert_untouched(&self, what: &str) {
        assert_eq!(self.snapshot(), self.before, "{what}: the victim changed");
        for p in [&self.dir, &self.file] {
            assert!(
                sys::mount_at(p).unwrap().is_none(),
                "{what}: something is mounted over {}",
                p.display()
            );
        }
    }
}

/// Runs `sh -c script` as the attacker (`nobody`, through setpriv).
fn as_attacker(script: &str) {
    let (uid, gid) = nobody();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux; ./dev/setup installs it)");
    assert!(out.status.success(), "as nobody: {script}: {}", text(&out));
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// `wcfsd ARGS` with the mount root `root`, as `user` (None: root).
fn wcfsd_as(root: &Path, user: Option<(u32, u32)>, args: &[&OsStr]) -> Output {
    let mut cmd = Command::new(wcfsd_bin());
    cmd.args(args)
        .env(lifecycle::MOUNT_ROOT_ENV, root)
        .current_dir("/")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.output().expect("run wcfsd")
}

fn wcfsd(root: &Path, args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    wcfsd_as(root, None, &args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A database with one ZBigFile of three blocks, readable by everyone.
fn setup() -> (Env, Oid) {
    let (env, f, _) = setup_at();
    (env, f)
}

/// [`setup`], and the tid of its commit.
fn setup_at() -> (Env, Oid, Tid) {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    env.py.fill(f, 0, "zblk0", 0xa1, BS as usize);
    env.py.write(f, 1, "zblk1", &[7u8; 3000]);
    env.py.fill(f, 2, "zblk0", 0xc3, BS as usize);
    let at = env.py.commit();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (env, f, at)
}

/// No wcfsd process serving `zurl` is left.
fn assert_no_daemon(zurl: &str, what: &str) {
    for ent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = ent.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_daemon = args.first().is_some_and(|a| a.ends_with(b"wcfsd"))
            && args.contains(&zurl.as_bytes())
            && !args
                .iter()
                .any(|a| [&b"status"[..], b"stop", b"start"].contains(a));
        assert!(
            !(is_daemon && sys::alive(pid)),
            "{what}: a wcfsd of {zurl} is running: pid {pid}"
        );
    }
}

/// Where an attack plants its name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    Root,
    Mountpoint,
    Lock,
    Log,
}

/// What an attack plants.
#[derive(Clone, Copy, Debug)]
enum Plant {
    SymlinkOut,
    HardlinkToRoots,
    AttackersDir,
    AttackersFile,
    Fifo,
    /// A directory of root's, writable by all, not sticky (the root only).
    RootsOpenDir,
}

impl Private {
    fn path_of(&self, place: Place, zurl: &str) -> PathBuf {
        let c = cfg(&self.root);
        match place {
            Place::Root => self.root.clone(),
            Place::Mountpoint => c.mountpoint(zurl),
            Place::Lock => c.lock_path(zurl),
            Place::Log => c.log_path(zurl),
        }
    }
}

/// Plants `plant` at `path`; returns what refusals must say.
fn plant(path: &Path, place: Place, plant: Plant, victim: &Victim) -> &'static str {
    let dir_place = matches!(place, Place::Root | Place::Mountpoint);
    let p = sh_quote(path);
    match plant {
        Plant::SymlinkOut => {
            let target = if dir_place { &victim.dir } else { &victim.file };
            as_attacker(&format!("ln -s {} {p}", sh_quote(target)));
            "is a symbolic link"
        }
        Plant::HardlinkToRoots => {
            // A hard link to a file of root's: with fs.protected_hardlinks
            // off, any user can make one; here root makes it for them.
            std::fs::hard_link(&victim.file, path).unwrap();
            if dir_place {
                "is a regular file, not a directory"
            } else {
                "has 2 hard links"
            }
        }
        Plant::AttackersDir => {
            as_attacker(&format!("mkdir {p} && chmod 1777 {p}"));
            if dir_place {
                "is owned by uid"
            } else {
                "is a directory, not a regular file"
            }
        }
        Plant::AttackersFile => {
            as_attacker(&format!("echo planted > {p}"));
            if dir_place {
                "is a regular file, not a directory"
            } else {
                "is owned by uid"
            }
        }
        Plant::Fifo => {
            as_attacker(&format!("mkfifo {p}"));
            "is a FIFO"
        }
        Plant::RootsOpenDir => {
            std::fs::create_dir(path).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
            "writable by others but not sticky"
        }
    }
}

/// What the planted name was (lstat), to see it left alone.
fn lstat_key(path: &Path) -> Option<(u64, u32, u32, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.ino(), m.mode(), m.uid(), m.nlink()))
}

/// For every attack on `place`: start, join with autostart, status, stop
/// and remove_all end in a clear error (naming the path and the reason)
/// or in the right answer, nothing outside is touched, nothing mounted,
/// no daemon left; then, the planted name gone, the same root works.
fn attacks_on(place: Place, plants: &[Plant]) {
    let (env, _f) = setup();
    let zurl = env.zurl.clone();
    let victim = Victim::new();
    for &what in plants {
        let case = format!("{place:?}/{what:?}");
        let pv = if place == Place::Root {
            Private::new()
        } else {
            Private::with_root()
        };
        let root = pv.root.clone();
        let path = pv.path_of(place, &zurl);
        let why = plant(&path, place, what, &victim);
        let planted = lstat_key(&path);
        let refused = |msg: &str, op: &str| {
            assert!(
                msg.contains(&format!("refusing {}", path.display())) && msg.contains(why),
                "{case}: {op}: want a refusal of {} saying {why:?}, got: {msg}",
                path.display()
            );
        };
        // Which operations use the planted name: all of them use the root
        // and the mountpoint; only start and join use the lock and log
        // (stop goes on without a lock that is not ours).
        let everywhere = matches!(place, Place::Root | Place::Mountpoint);

        let out = wcfsd(&root, &["start", &zurl]);
        assert!(
            !out.status.success(),
            "{case}: start succeeded: {}",
            text(&out)
        );
        refused(&text(&out), "wcfsd start");

        let e = lifecycle::join_with(&zurl, true, &cfg(&root)).unwrap_err();
        refused(&e.to_string(), "join");
        assert_eq!(e.errno(), libc::EPERM, "{case}: join: {e}");
        assert!(matches!(e, Error::Unsafe { .. }), "{case}: {e:?}");

        let out = wcfsd(&root, &["status", &zurl]);
        if everywhere {
            assert_eq!(out.status.code(), Some(4), "{case}: status: {}", text(&out));
            refused(&text(&out), "wcfsd status");
        } else {
            assert_eq!(out.status.code(), Some(3), "{case}: status: {}", text(&out));
            assert!(text(&out).contains("not running"), "{}", text(&out));
        }

        let out = wcfsd(&root, &["stop", &zurl]);
        if everywhere {
            assert!(!out.status.success(), "{case}: stop: {}", text(&out));
            refused(&text(&out), "wcfsd stop");
        } else {
            assert!(out.status.success(), "{case}: stop: {}", text(&out));
            assert!(text(&out).contains("not running"), "{}", text(&out));
        }

        let e = lifecycle::remove_all(&zurl, &cfg(&root)).unwrap_err();
        refused(&e.to_string(), "remove_all");

        assert_eq!(
            lstat_key(&path),
            planted,
            "{case}: the planted name changed"
        );
        victim.assert_untouched(&case);
        assert!(pv.mounts().is_empty(), "{case}: mounted: {:?}", pv.mounts());
        assert_no_daemon(&zurl, &case);
        if place != Place::Root {
            // Nothing else of ours was made outside the three names.
            for ent in std::fs::read_dir(&root).unwrap().flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                assert!(
                    name.starts_with(&path.file_name().unwrap().to_string_lossy()[..40]),
                    "{case}: unexpected {name} in the mount root"
                );
            }
        }

        // The planted name removed (as its owner would), our own path works.
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            std::fs::remove_dir(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        let out = wcfsd(&root, &["start", &zurl]);
        assert!(out.status.success(), "{case}: start after: {}", text(&out));
        let mnt = cfg(&root).mountpoint(&zurl);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            mnt.to_str().unwrap()
        );
        let st = lifecycle::status_in(&zurl, &cfg(&root)).unwrap();
        assert!(st.is_healthy(), "{case}: {}", st.summary());
        let meta = std::fs::symlink_metadata(&root).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (0, 0o1777),
            "{case}: mount root"
        );
        lifecycle::remove_all(&zurl, &cfg(&root)).unwrap();
        assert!(pv.mounts().is_empty(), "{case}: mounted after stop");
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "{case}: remove_all left something"
        );
        victim.assert_untouched(&case);
        assert_no_daemon(&zurl, &case);
    }
}

const ENTRY_PLANTS: [Plant; 5] = [
    Plant::SymlinkOut,
    Plant::HardlinkToRoots,
    Plant::AttackersDir,
    Plant::AttackersFile,
    Plant::Fifo,
];

#[test]
fn planted_mount_root_is_refused() {
    let mut plants = ENTRY_PLANTS.to_vec();
    plants.push(Plant::RootsOpenDir);
    attacks_on(Place::Root, &plants);
}

#[test]
fn planted_mountpoint_is_refused() {
    attacks_on(Place::Mountpoint, &ENTRY_PLANTS);
}

#[test]
fn planted_lock_is_refused() {
    attacks_on(Place::Lock, &ENTRY_PLANTS);
}

#[test]
fn planted_log_is_refused() {
    attacks_on(Place::Log, &ENTRY_PLANTS);
}

/// A zurl with `..`, commas, backslashes, escape sequences and non-ASCII
/// in its path serves (as root and as an ordinary user, where the zurl
/// goes through fusermount3's option list) with source exactly the zurl,
/// writes nothing but its three names in the mount root, and its log
/// lines hold no raw control character. A zurl with a newline, or an
/// argument that is not UTF-8, is a clear error.
#[test]
fn odd_zurls_stay_in_their_place() {
    let (mut env, f) = setup();
    let odd = env.dir.path().join("a,b\\c\u{1b}[31mé ü\t");
    std::fs::create_dir(&odd).unwrap();
    std::fs::copy(&env.datafs, odd.join("data.fs")).unwrap();
    std::fs::set_permissions(&odd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dirname = env.dir.path().file_name().unwrap().to_str().unwrap();
    let zurl = format!(
        "file://{}/../{dirname}/{}/data.fs",
        env.dir.path().display(),
        odd.file_name().unwrap().to_str().unwrap()
    );
    let want = env.py.block(f, 0, None);
    for user in [None, Some(nobody())] {
        let pv = Private::with_root();
        let root = pv.root.clone();
        let out = wcfsd_as(&root, user, &[OsStr::new("start"), OsStr::new(&zurl)]);
        assert!(out.status.success(), "{user:?}: start: {}", text(&out));
        let mnt = cfg(&root).mountpoint(&zurl);
        let m = sys::mount_at(&mnt).unwrap().expect("mounted");
        assert_eq!(
            (m.fstype.as_str(), m.source.as_str()),
            ("fuse.wcfs", zurl.as_str())
        );
        // Read as the user that serves (a user's mount is private).
        let mut cat = Command::new("cat");
        cat.arg(mnt.join(format!("head/bigfile/{f}")));
        if let Some((uid, gid)) = user {
            cat.uid(uid).gid(gid);
        }
        let got = cat.output().unwrap();
        assert!(got.status.success(), "{user:?}: cat: {}", text(&got));
        assert_eq!(&got.stdout[..BS as usize], &want[..], "{user:?}: block 0");
        let out = wcfsd_as(&root, user, &[OsStr::new("stop"), OsStr::new(&zurl)]);
        assert!(out.status.success(), "{user:?}: stop: {}", text(&out));
        let log = std::fs::read_to_string(cfg(&root).log_path(&zurl)).unwrap();
        assert!(log.contains("serving \"file://"), "{user:?}: log:\n{log}");
        for line in log.lines() {
            assert!(
                !line.chars().any(char::is_control),
                "{user:?}: raw control character in log line {line:?}"
            );
        }
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let h = mnt.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            names,
            vec![h.clone(), format!("{h}.lock"), format!("{h}.log")]
        );
        assert!(pv.mounts().is_empty());
        if user.is_none() {
            lifecycle::remove_all(&zurl, &cfg(&root)).unwrap();
        }
    }

    let pv = Private::with_root();
    let out = wcfsd(&pv.root, &["start", "file:///tmp/x\n/../data.fs"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(r#"invalid zurl "file:///tmp/x\n/../data.fs""#),
        "{}",
        text(&out)
    );
    let out = wcfsd_as(
        &pv.root,
        None,
        &[
            OsStr::new("start"),
            OsStr::from_bytes(b"file:///tmp/\xff/data.fs"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not valid UTF-8"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&pv.root).unwrap().count(), 0);
}

/// The entry point of the child roles (as `nobody`); nothing in a normal
/// run. Roles: `join` (join with autostart, read block 0, print it in
/// hex), `read` (read block 0 of head/bigfile/$WCFS_ISO_FILE under
/// $WCFS_ISO_MNT), `never` (watch the file and never ack a pin).
#[test]
fn shared_child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("${n} not set"));
    let f: Oid = var("WCFS_ISO_FILE").parse().unwrap();
    let code = match role.as_str() {
        "join" => {
            let root = PathBuf::from(var(lifecycle::MOUNT_ROOT_ENV));
            match lifecycle::join_with(&var("WCFS_ISO_ZURL"), true, &cfg(&root)) {
                Ok(mnt) => {
                    let b =
                        common::Wcfs::pread_block(&mnt.join(format!("head/bigfile/{f}")), 0, BS);
                    match b {
                        Ok(b) => println!("SHARED-BLOCK {} {}", mnt.display(), hex(&b)),
                        Err(e) => println!("SHARED-ERR read: {e}"),
                    }
                    0
                }
                Err(e) => {
                    println!("SHARED-ERR join: {e}");
                    1
                }
            }
        }
        "read" => {
            let mnt = PathBuf::from(var("WCFS_ISO_MNT"));
            // With $WCFS_ISO_HEAD: once head/ shows that commit (the daemon
            // sees a commit some time after Python made it; only this user
            // can look at its mount).
            if let Ok(h) = std::env::var("WCFS_ISO_HEAD") {
                let want: Tid = h.parse().unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let at = std::fs::read_to_string(mnt.join("head/at"))
                        .ok()
                        .and_then(|s| s.trim().parse::<Tid>().ok());
                    if at.is_some_and(|at| at >= want) {
                        break;
                    }
                    if Instant::now() > deadline {
                        println!("SHARED-ERR head/at {at:?} never reached {want}");
                        std::process::exit(1);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            match common::Wcfs::pread_block(&mnt.join(format!("head/bigfile/{f}")), 0, BS) {
                Ok(b) => println!("SHARED-BLOCK {} {}", mnt.display(), hex(&b)),
                Err(e) => println!("SHARED-ERR read: {e}"),
            }
            0
        }
        "never" => {
            let at: Tid = var("WCFS_ISO_AT").parse().unwrap();
            let mnt = PathBuf::from(var("WCFS_ISO_MNT"));
            match WatchLink::open_with(&mnt.join("head/watch"), PinMode::Never) {
                Ok(l) => match l.watch(f, at) {
                    Ok(()) => {
                        println!("SHARED-READY");
                        let mut sink = Vec::new();
                        let _ = std::io::stdin().read_to_end(&mut sink);
                        0
                    }
                    Err(e) => {
                        println!("SHARED-ERR watch: {e}");
                        1
                    }
                },
                Err(e) => {
                    println!("SHARED-ERR open: {e}");
                    1
                }
            }
        }
        _ => 3,
    };
    std::process::exit(code);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A wcfsd log holds no warning or error line (glog: `W`/`E` + date).
fn assert_quiet_log(log: &str) {
    for line in log.lines() {
        let b = line.as_bytes();
        let glog = b.len() > 5 && b[1..5].iter().all(u8::is_ascii_digit);
        assert!(
            !(glog && (b[0] == b'W' || b[0] == b'E')),
            "a warning or error in the log of an ordinary user's daemon: {line}\n{log}"
        );
    }
}

/// As `nobody`: start, status, stop, serve in the foreground, with no
/// warning in the log (root-only steps are skipped quietly). Root sees
/// the daemon as another user's: status says so, a join is a clear error
/// (the mount is not allow_other), and root may stop it.
#[test]
fn ordinary_user_starts_serves_and_stops() {
    let (mut env, f) = setup();
    let zurl = env.zurl.clone();
    let pv = Private::with_root();
    let root = pv.root.clone();
    let user = Some(nobody());
    let z = OsStr::new(&zurl);
    let mnt = cfg(&root).mountpoint(&zurl);

    let out = wcfsd_as(&root, user, &[OsStr::new("start"), z]);
    assert!(out.status.success(), "start: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        mnt.to_str().unwrap()
    );
    let m = sys::mount_at(&mnt).unwrap().expect("mounted");
    assert_eq!(m.user_id, Some(nobody().0));
    let log_owner = std::fs::metadata(cfg(&root).log_path(&zurl)).unwrap().uid();
    assert_eq!(log_owner, nobody().0);
    let out = wcfsd_as(&root, user, &[OsStr::new("status"), z]);
    assert_eq!(out.status.code(), Some(0), "status: {}", text(&out));
    assert!(text(&out).contains("healthy"), "{}", text(&out));
    let mut reader = RoleChild::spawn_as(
        ENTRY,
        "read",
        &[
            ("WCFS_ISO_FILE", f.to_string()),
            ("WCFS_ISO_MNT", mnt.display().to_string()),
        ],
        user,
    );
    let got = reader
        .next_after("SHARED-BLOCK ", Duration::from_secs(20))
        .unwrap();
    assert!(got.ends_with(&hex(&env.py.block(f, 0, None))), "{got}");

    // Root: another user's daemon.
    let out = wcfsd(&root, &["status", &zurl]);
    assert_eq!(out.status.code(), Some(4), "root status: {}", text(&out));
    assert!(
        text(&out).contains(&format!("by the wcfsd of uid {}", nobody().0)),
        "{}",
        text(&out)
    );
    let e = lifecycle::join_with(&zurl, true, &cfg(&root)).unwrap_err();
    assert_eq!(e.errno(), libc::EACCES, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("by the wcfsd of uid {}", nobody().0))
            && msg.contains("not mounted allow_other"),
        "{msg}"
    );

    let out = wcfsd_as(&root, user, &[OsStr::new("stop"), z]);
    assert!(out.status.success(), "stop: {}", text(&out));
    assert!(text(&out).contains("stopped"), "{}", text(&out));
    assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());
    assert_no_daemon(&zurl, "after stop");

    // Root may stop it.
    let out = wcfsd_as(&root, user, &[OsStr::new("start"), z]);
    assert!(out.status.success(), "start again: {}", text(&out));
    let out = wcfsd(&root, &["stop", &zurl]);
    assert!(out.status.success(), "root stop: {}", text(&out));
    assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());

    // Foreground serve, ended by SIGTERM.
    let (uid, gid) = nobody();
    let mut serve = Command::new(wcfsd_bin())
        .args([OsStr::new("serve"), z])
        .env(lifecycle::MOUNT_ROOT_ENV, &root)
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = wcfsd_as(&root, user, &[OsStr::new("status"), z]);
        if out.status.code() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve not healthy: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sys::signal(serve.id(), libc::SIGTERM).unwrap();
    let st = common::wait_timeout(&mut serve, Duration::from_secs(10)).expect("serve exits");
    let mut log = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(st.success(), "serve: {st:?}\n{log}");
    assert_quiet_log(&log);
    assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());
    assert_quiet_log(&std::fs::read_to_string(cfg(&root).log_path(&zurl)).unwrap());
}

/// As `nobody`: join with autostart starts a daemon through fusermount3
/// and serves what Python wrote; root joining the same zurl then gets a
/// clear error.
#[test]
fn ordinary_user_joins_with_autostart() {
    let (mut env, f) = setup();
    let zurl = env.zurl.clone();
    let pv = Private::with_root();
    let root = pv.root.clone();
    let mut child = RoleChild::spawn_as(
        ENTRY,
        "join",
        &[
            ("WCFS_ISO_FILE", f.to_string()),
            ("WCFS_ISO_ZURL", zurl.clone()),
            (lifecycle::MOUNT_ROOT_ENV, root.display().to_string()),
        ],
        Some(nobody()),
    );
    let got = child
        .next_after("SHARED-BLOCK ", Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("{e}"));
    let mnt = cfg(&root).mountpoint(&zurl);
    assert_eq!(
        got,
        format!("{} {}", mnt.display(), hex(&env.py.block(f, 0, None)))
    );
    // Gone, with whatever it had open in the mount: `stop` below must find
    // it idle, or the unmount falls back to detaching (a warning).
    let st = child.wait_exit(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "join child: {st:?}");
    let m = sys::mount_at(&mnt)
        .unwrap()
        .expect("the joined daemon is mounted");
    assert_eq!(m.user_id, Some(nobody().0));
    let st = lifecycle::status_in(&zurl, &cfg(&root)).unwrap();
    assert_eq!(
        st.state,
        lifecycle::State::OtherUser(nobody().0),
        "{}",
        st.summary()
    );
    let e = lifecycle::join_with(&zurl, true, &cfg(&root)).unwrap_err();
    assert!(
        matches!(e, Error::OtherUser { uid, .. } if uid == nobody().0),
        "{e:?}"
    );
    let out = wcfsd_as(
        &root,
        Some(nobody()),
        &[OsStr::new("stop"), OsStr::new(&zurl)],
    );
    assert!(out.status.success(), "stop: {}", text(&out));
    assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());
    assert_quiet_log(&std::fs::read_to_string(cfg(&root).log_path(&zurl)).unwrap());
}

/// A daemon of an ordinary user kills that user's client that does not
/// answer a pin (SIGBUS/SIGKILL), and keeps serving — no EIO mode.
#[test]
fn ordinary_users_daemon_kills_its_faulty_client() {
    let (mut env, f, h0) = setup_at();
    let zurl = env.zurl.clone();
    let pv = Private::with_root();
    let root = pv.root.clone();
    let user = Some(nobody());
    let z = OsStr::new(&zurl);
    let out = wcfsd_as(
        &root,
        user,
        &[
            OsStr::new("start"),
            OsStr::new("-pintimeout"),
            OsStr::new("1s"),
            z,
        ],
    );
    assert!(out.status.success(), "start: {}", text(&out));
    let mnt = cfg(&root).mountpoint(&zurl);
    let envs = |at: Tid| {
        vec![
            ("WCFS_ISO_FILE", f.to_string()),
            ("WCFS_ISO_AT", at.to_string()),
            ("WCFS_ISO_MNT", mnt.display().to_string()),
        ]
    };
    // Block 0 read through head first, so that a change of it pins.
    let mut r0 = RoleChild::spawn_as(ENTRY, "read", &envs(h0), user);
    r0.next_after("SHARED-BLOCK ", Duration::from_secs(20))
        .unwrap();
    let mut never = RoleChild::spawn_as(ENTRY, "never", &envs(h0), user);
    never
        .wait_line("SHARED-READY", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));

    env.py.fill(f, 0, "zblk0", 0x5e, BS as usize);
    let h1 = env.py.commit();
    let mut envs1 = envs(h0);
    envs1.push(("WCFS_ISO_HEAD", h1.to_string()));
    let mut r1 = RoleChild::spawn_as(ENTRY, "read", &envs1, user);
    let got = r1
        .next_after("SHARED-BLOCK ", Duration::from_secs(20))
        .unwrap();
    assert!(got.ends_with(&hex(&env.py.block(f, 0, None))), "{got}");
    let st = never
        .wait_exit(Duration::from_secs(10))
        .expect("the faulty client was not killed");
    let sig = term_signal(&st);
    assert!(
        sig == Some(libc::SIGBUS) || sig == Some(libc::SIGKILL),
        "faulty client ended with {st:?}"
    );
    let out = wcfsd_as(&root, user, &[OsStr::new("status"), z]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status after the kill: {}",
        text(&out)
    );
    let log = std::fs::read_to_string(cfg(&root).log_path(&zurl)).unwrap();
    assert!(
        log.contains(&format!("killing pid {}", never.pid())),
        "log:\n{log}"
    );
    assert!(!log.contains("EIO mode"), "log:\n{log}");
    let out = wcfsd_as(&root, user, &[OsStr::new("stop"), z]);
    assert!(out.status.success(), "stop: {}", text(&out));
    assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());
}

/// `wcfsd ZURL MOUNTPOINT` itself refuses a mountpoint in a directory
/// every user can write to that is not its own directory — another user's
/// directory, or a symbolic link to a directory outside — and mounts
/// nothing; its own directory there is fine.
#[test]
fn daemon_refuses_a_foreign_mountpoint_in_a_shared_dir() {
    let (env, _f) = setup();
    let pv = Private::with_root();
    let victim = Victim::new();
    let theirs = pv.root.join("theirs");
    as_attacker(&format!("mkdir {}", sh_quote(&theirs)));
    let link = pv.root.join("link");
    as_attacker(&format!(
        "ln -s {} {}",
        sh_quote(&victim.dir),
        sh_quote(&link)
    ));
    for (mnt, why) in [(&theirs, "is owned by uid"), (&link, "is a symbolic link")] {
        let out = Command::new(wcfsd_bin())
            .arg(&env.zurl)
            .arg(mnt)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}: {}", mnt.display(), text(&out));
        let msg = text(&out);
        assert!(
            msg.contains(&format!("refusing {}", mnt.display())) && msg.contains(why),
            "{msg}"
        );
        assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());
        victim.assert_untouched(&mnt.display().to_string());
    }
    let ours = pv.root.join("ours");
    std::fs::create_dir(&ours).unwrap();
    let logfile = env.dir.path().join("ours.log");
    let w = common::Wcfs::start(&env.zurl, &ours, &logfile, &[]).unwrap_or_else(|e| panic!("{e}"));
    drop(w);
    assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());
}

/// As `nobody`: a killed daemon's dead mount is cleaned up by the next
/// start (through fusermount3), and a stopped (SIGSTOP) daemon is stopped
/// all the same — its connection aborted through fusectl, whose files
/// belong to the mount's owner.
#[test]
fn ordinary_user_recovers_dead_and_stops_stuck() {
    let (_env, _f) = setup();
    let zurl = _env.zurl.clone();
    let pv = Private::with_root();
    let root = pv.root.clone();
    let user = Some(nobody());
    let z = OsStr::new(&zurl);
    let pid_of = || {
        let st = lifecycle::status_in(&zurl, &cfg(&root)).unwrap();
        assert_eq!(
            st.state,
            lifecycle::State::OtherUser(nobody().0),
            "{}",
            st.summary()
        );
        st.pid.expect("daemon pid")
    };

    let out = wcfsd_as(&root, user, &[OsStr::new("start"), z]);
    assert!(out.status.success(), "start: {}", text(&out));
    let pid = pid_of();
    sys::signal(pid, libc::SIGKILL).unwrap();
    assert!(sys::wait_until(Duration::from_secs(10), || !sys::alive(
        pid
    )));
    let out = wcfsd_as(&root, user, &[OsStr::new("status"), z]);
    assert_eq!(out.status.code(), Some(1), "status of dead: {}", text(&out));
    let out = wcfsd_as(&root, user, &[OsStr::new("start"), z]);
    assert!(out.status.success(), "start over dead: {}", text(&out));
    assert!(text(&out).contains("over the dead mount"), "{}", text(&out));
    assert_eq!(pv.mounts().len(), 1, "{:?}", pv.mounts());

    let pid = pid_of();
    sys::signal(pid, libc::SIGSTOP).unwrap();
    let out = wcfsd_as(
        &root,
        user,
        &[
            OsStr::new("stop"),
            OsStr::new("-timeout"),
            OsStr::new("1s"),
            z,
        ],
    );
    assert!(out.status.success(), "stop of stuck: {}", text(&out));
    assert!(text(&out).contains("stuck"), "{}", text(&out));
    assert!(pv.mounts().is_empty(), "{:?}", pv.mounts());
    assert!(!sys::alive(pid), "the stuck daemon lives");
    assert_quiet_log(&std::fs::read_to_string(cfg(&root).log_path(&zurl)).unwrap());
}
