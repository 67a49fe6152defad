//! Shared helpers of the filesystem tests: a temporary database written by
//! Python, a Python driver that commits to it on command (and answers what
//! Python sees at any tid: the oracle), and a running `wcfsd` mounted on a
//! temporary directory.
//!
//! Cleanup is by `Drop`, so it also happens when a test fails: the daemon
//! is killed and the mountpoint unmounted (`fusermount3 -u -z`), then the
//! driver is stopped and the directory removed. [`Env`] declares its fields
//! in that order.
//!
//! The Python interpreter is `$WCFS_PYTHON`, by default the repository's
//! `.venv/bin/python`; tests fail with a clear message when it is missing.

#![allow(dead_code)] // each test binary uses a different part

pub mod bench;
pub mod outage;
pub mod proxy;
pub mod watch;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

pub fn python() -> PathBuf {
    testkit::python()
}

fn driver_script() -> PathBuf {
    testkit::repo().join("python/fs_testdata/driver.py")
}

/// A Python process committing to a data.fs (python/fs_testdata/driver.py).
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Driver {
    pub fn start(datafs: &Path) -> Driver {
        Self::start_with(&python(), datafs)
    }

    /// The driver run by `py` (the NEO venv's Python for a NEO cluster).
    pub fn start_with(py: &Path, datafs: &Path) -> Driver {
        let mut child = Command::new(py)
            .arg(driver_script())
            .arg(datafs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python driver");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Driver { child, stdin, out }
    }

    fn cmd(&mut self, json: &str) -> String {
        writeln!(self.stdin, "{json}").expect("write to driver");
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read from driver");
        assert!(!line.is_empty(), "driver died on {json}");
        let line = line.trim_end().to_string();
        assert!(!line.starts_with("error"), "driver: {json}: {line}");
        line
    }

    fn word(&mut self, json: &str, what: &str) -> String {
        let line = self.cmd(json);
        line.strip_prefix(what)
            .and_then(|s| s.strip_prefix(' '))
            .unwrap_or_else(|| panic!("driver: {json}: want {what}, got {line:?}"))
            .to_string()
    }

    /// A new ZBigFile (visible after the next commit).
    pub fn new_file(&mut self, blksize: u64) -> Oid {
        self.word(&format!(r#"{{"op":"new","blksize":{blksize}}}"#), "oid")
            .parse()
            .unwrap()
    }

    /// Sets block `blk` to `data`; kind: "zblk0", "zblk1", "zblk".
    pub fn write(&mut self, file: Oid, blk: u64, kind: &str, data: &[u8]) {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        self.cmd(&format!(
            r#"{{"op":"write","file":"{file}","blk":{blk},"kind":"{kind}","data":"{hex}"}}"#
        ));
    }

    /// Sets block `blk` to `len` bytes of `byte`.
    pub fn fill(&mut self, file: Oid, blk: u64, kind: &str, byte: u8, len: usize) {
        self.cmd(&format!(
            r#"{{"op":"write","file":"{file}","blk":{blk},"kind":"{kind}","fill":{byte},"len":{len}}}"#
        ));
    }

    pub fn punch(&mut self, file: Oid, blk: u64) {
        self.cmd(&format!(r#"{{"op":"punch","file":"{file}","blk":{blk}}}"#));
    }

    pub fn truncate(&mut self, file: Oid, nblk: u64) {
        self.cmd(&format!(
            r#"{{"op":"truncate","file":"{file}","nblk":{nblk}}}"#
        ));
    }

    pub fn commit(&mut self) -> Tid {
        self.word(r#"{"op":"commit"}"#, "tid").parse().unwrap()
    }

    fn at_json(at: Option<Tid>) -> String {
        at.map_or("null".into(), |t| format!("\"{t}\""))
    }

    /// Block `blk` as Python sees it at `at` (None: latest), blksize bytes.
    pub fn block(&mut self, file: Oid, blk: u64, at: Option<Tid>) -> Vec<u8> {
        let n: usize = self
            .word(
                &format!(
                    r#"{{"op":"block","file":"{file}","blk":{blk},"at":{}}}"#,
                    Self::at_json(at)
                ),
                "data",
            )
            .parse()
            .unwrap();
        let mut buf = vec![0; n];
        self.out
            .read_exact(&mut buf)
            .expect("block data from driver");
        buf
    }

    pub fn size(&mut self, file: Oid, at: Option<Tid>) -> u64 {
        self.word(
            &format!(
                r#"{{"op":"size","file":"{file}","at":{}}}"#,
                Self::at_json(at)
            ),
            "size",
        )
        .parse()
        .unwrap()
    }

    /// The ZBlk of block `blk` (None: a hole).
    pub fn zblk(&mut self, file: Oid, blk: u64) -> Option<Oid> {
        let w = self.word(
            &format!(r#"{{"op":"zblk","file":"{file}","blk":{blk}}}"#),
            "oid",
        );
        (w != "-").then(|| w.parse().unwrap())
    }

    /// Commits a garbage record for `oid` with the low-level storage API.
    pub fn corrupt(&mut self, oid: Oid) -> Tid {
        self.word(&format!(r#"{{"op":"corrupt","oid":"{oid}"}}"#), "tid")
            .parse()
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, r#"{{"op":"quit"}}"#);
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `wcfsd`, its mountpoint and its log.
pub struct Wcfs {
    child: Option<Child>,
    pub mnt: PathBuf,
    pub logfile: PathBuf,
}

/// The daemon under test: cargo's own path to it inside the daemon crate;
/// elsewhere (the client library's tests include this module too) the one
/// next to the test executable.
pub fn wcfsd_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_wcfsd") {
        Some(p) => PathBuf::from(p),
        None => testkit::wcfsd_bin(),
    }
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == canon.to_str())
}

impl Wcfs {
    /// Starts `wcfsd ARGS ZURL MNT` and waits until `.wcfs/zurl` reads back
    /// the zurl. Err(log) if the daemon exits first or does not get ready.
    pub fn start(zurl: &str, mnt: &Path, logfile: &Path, args: &[&str]) -> Result<Wcfs, String> {
        Self::start_with_env(zurl, mnt, logfile, args, &[])
    }

    /// Like [`Wcfs::start`], with more variables in the daemon's
    /// environment.
    pub fn start_with_env(
        zurl: &str,
        mnt: &Path,
        logfile: &Path,
        args: &[&str],
        vars: &[(String, String)],
    ) -> Result<Wcfs, String> {
        let log = std::fs::File::create(logfile).unwrap();
        let child = Command::new(wcfsd_bin())
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .args(args)
            .arg(zurl)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start wcfsd");
        let mut w = Wcfs {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            logfile: logfile.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = w.child.as_mut().unwrap().try_wait() {
                w.child = None;
                return Err(format!("wcfsd exited ({st}):\n{}", w.log()));
            }
            // (A password in the zurl is not shown there.)
            if std::fs::read_to_string(w.path(".wcfs/zurl"))
                .ok()
                .as_deref()
                == Some(&zodb::zurl::redacted(zurl))
            {
                return Ok(w);
            }
            if Instant::now() > deadline {
                return Err(format!("wcfsd not ready after 20s:\n{}", w.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.logfile).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What head/at shows.
    pub fn head(&self) -> Tid {
        std::fs::read_to_string(self.path("head/at"))
            .expect("read head/at")
            .trim()
            .parse()
            .expect("head/at is a tid")
    }

    /// Waits until head/at shows `tid` (or later).
    pub fn wait_head(&self, tid: Tid) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.head() < tid {
            assert!(
                Instant::now() < deadline,
                "head/at stuck at {} waiting for {tid}; log:\n{}",
                self.head(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn head_file(&self, file: Oid) -> PathBuf {
        self.path(&format!("head/bigfile/{file}"))
    }

    pub fn at_file(&self, at: Tid, file: Oid) -> PathBuf {
        self.path(&format!("@{at}/bigfile/{file}"))
    }

    /// Block `blk` of `path` read with pread(2) (short at EOF).
    pub fn pread_block(path: &Path, blk: u64, blksize: u64) -> std::io::Result<Vec<u8>> {
        read_block_of(&std::fs::File::open(path)?, blk, blksize)
    }

    /// Block `blk` of head/bigfile/<file> through read(2).
    pub fn read_block(&self, file: Oid, blk: u64, blksize: u64) -> Vec<u8> {
        Self::pread_block(&self.head_file(file), blk, blksize).expect("read head block")
    }

    /// Block `blk` of @<at>/bigfile/<file> through read(2).
    pub fn read_block_at(&self, at: Tid, file: Oid, blk: u64, blksize: u64) -> Vec<u8> {
        Self::pread_block(&self.at_file(at, file), blk, blksize).expect("read @at block")
    }

    /// Sends `sig` and waits for the daemon to exit.
    pub fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("wcfsd running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        wait_timeout(&mut child, Duration::from_secs(20)).expect("wcfsd did not exit")
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let st = wait_timeout(self.child.as_mut()?, timeout)?;
        self.child = None;
        Some(st)
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Unmounts `mnt` if mounted (lazily: a test may still hold files open).
pub fn unmount(mnt: &Path) {
    if is_mounted(mnt) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z", "-q"])
            .arg(mnt)
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Wcfs {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        unmount(&self.mnt);
    }
}

/// A test setup: temp dir with data.fs, the Python driver, and (after
/// [`Env::mount`]) a daemon; with [`Env::new_zeo`], a ZEO server serves the
/// data.fs and the driver and the daemon both go through it; with
/// [`Env::new_pg`], a PostgreSQL cluster of its own holds the database
/// (RelStorage), the driver commits to the primary and the daemon serves
/// the primary or a streaming replica. Fields drop in order: daemon,
/// driver, servers, dir.
pub struct Env {
    pub wcfs: Option<Wcfs>,
    pub py: Driver,
    pub zeo: Option<testkit::ZeoServer>,
    /// The replica the daemon serves (with `new_pg(true)`).
    pub pg_replica: Option<testkit::PgServer>,
    /// The primary (with `new_pg`): database [`PG_DB`].
    pub pg: Option<testkit::PgServer>,
    /// The NEO cluster (with `new_neo`).
    pub neo: Option<testkit::neo::NeoCluster>,
    pub datafs: PathBuf,
    pub zurl: String,
    pub dir: tempfile::TempDir,
}

/// The database of [`Env::new_pg`].
pub const PG_DB: &str = "zodb";

/// The role the daemon reads as in [`Env::new_pg_tls`]: the common name of
/// its client certificate.
pub const PG_TLS_ROLE: &str = "wcfs_ro";

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("wcfs-test")
            .tempdir()
            .unwrap();
        let datafs = dir.path().join("data.fs");
        let py = Driver::start(&datafs);
        let zurl = format!("file://{}", datafs.display());
        Env {
            wcfs: None,
            py,
            zeo: None,
            pg_replica: None,
            pg: None,
            neo: None,
            datafs,
            zurl,
            dir,
        }
    }

    /// Like [`Env::new`], on a NEO cluster of its own (`masters` masters,
    /// 2 storage nodes, 1 replica): the driver commits through
    /// `neo.client.Storage` (in the NEO venv), the daemon serves `neo://`.
    /// None (the test skips) without the cluster script.
    pub fn new_neo(test: &str, masters: u32) -> Option<Env> {
        if !testkit::neo::NeoCluster::available(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("wcfs-test")
            .tempdir()
            .unwrap();
        let neo = testkit::neo::NeoCluster::start(masters, 2, 1);
        let zurl = neo.zurl();
        let py = Driver::start_with(&neo.python(), Path::new(&zurl));
        Some(Env {
            wcfs: None,
            py,
            zeo: None,
            pg_replica: None,
            pg: None,
            neo: Some(neo),
            datafs: dir.path().join("data.fs"),
            zurl,
            dir,
        })
    }

    /// Like [`Env::new`], with a real ZEO server (`runzeo`) in front of the
    /// data.fs: the driver commits through a Python ZEO ClientStorage, and
    /// the daemon serves `zeo://127.0.0.1:PORT`.
    pub fn new_zeo() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("wcfs-test")
            .tempdir()
            .unwrap();
        let datafs = dir.path().join("data.fs");
        let zeo = testkit::ZeoServer::start(&datafs);
        let zurl = zeo.zurl();
        let py = Driver::start(Path::new(&zurl));
        Env {
            wcfs: None,
            py,
            zeo: Some(zeo),
            pg_replica: None,
            pg: None,
            neo: None,
            datafs,
            zurl,
            dir,
        }
    }

    /// Like [`Env::new_zeo`], over TLS: `runzeo` with an `<ssl>` section
    /// and client authentication (certificates made in the test's dir);
    /// the driver's ZEO client and the daemon use `zeos://`.
    pub fn new_zeo_tls() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("wcfs-test")
            .tempdir()
            .unwrap();
        let datafs = dir.path().join("data.fs");
        let pki = testkit::certs::Pki::make(&dir.path().join("pki"), "wcfs");
        let zeo = testkit::ZeoServer::start_tls(&datafs, &pki, &pki.server, None);
        let zurl = zeo.zurl();
        let py = Driver::start(Path::new(&zurl));
        Env {
            wcfs: None,
            py,
            zeo: Some(zeo),
            pg_replica: None,
            pg: None,
            neo: None,
            datafs,
            zurl,
            dir,
        }
    }

    /// Like [`Env::new`], serving `zurl` in `dir` (with `zeo` running for
    /// as long as the Env): the driver commits through Python's storage
    /// for the same zurl (`python/wcfs_testdata/zurlstor.py`: a named ZEO
    /// storage, a Unix socket, a DemoStorage…).
    pub fn new_zurl(dir: tempfile::TempDir, zurl: &str, zeo: Option<testkit::ZeoServer>) -> Env {
        let py = Driver::start(Path::new(zurl));
        Env {
            wcfs: None,
            py,
            zeo,
            pg_replica: None,
            pg: None,
            neo: None,
            datafs: dir.path().join("data.fs"),
            zurl: zurl.to_string(),
            dir,
        }
    }

    /// Like [`Env::new`], on a PostgreSQL cluster of its own (RelStorage,
    /// history-preserving, database [`PG_DB`]): the driver commits to the
    /// primary as `postgres`; the daemon serves the primary, or with
    /// `replica` a streaming replica of it (`zurl`).
    pub fn new_pg(replica: bool) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("wcfs-test")
            .tempdir()
            .unwrap();
        let pg = testkit::PgServer::start();
        pg.create_db(PG_DB);
        let wzurl = pg.zurl(PG_DB);
        // RelStorage's tables first: a replica copies them.
        testkit::run_python("python/pg_oracle/pgoracle.py", &["init", &wzurl]);
        let pg_replica = replica.then(|| pg.start_replica());
        let zurl = pg_replica.as_ref().map_or(wzurl.clone(), |r| r.zurl(PG_DB));
        let py = Driver::start(Path::new(&wzurl));
        Env {
            wcfs: None,
            py,
            zeo: None,
            pg_replica,
            pg: Some(pg),
            neo: None,
            datafs: dir.path().join("data.fs"),
            zurl,
            dir,
        }
    }

    /// Like [`Env::new_pg`] (no replica), with TLS: the cluster takes TCP
    /// connections over TLS only (`testkit::PgServer::start_tls`), with
    /// certificates made in `<dir>/pki` (`testkit::certs`); the driver
    /// commits as `postgres` (its libpq prefers TLS), and the daemon reads
    /// as [`PG_TLS_ROLE`], logged in by its client certificate, with
    /// `sslmode=verify-full` — all given in the zurl.
    pub fn new_pg_tls() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("wcfs-test")
            .tempdir()
            .unwrap();
        let pki = testkit::certs::Pki::make(&dir.path().join("pki"), PG_TLS_ROLE);
        let pg = testkit::PgServer::start_tls(&pki.ca, &pki.server.cert, &pki.server.key);
        pg.create_db(PG_DB);
        let wzurl = pg.zurl(PG_DB);
        testkit::run_python("python/pg_oracle/pgoracle.py", &["init", &wzurl]);
        pg.create_reader(PG_TLS_ROLE, "unused", PG_DB);
        let zurl = pg.zurl_with(
            PG_TLS_ROLE,
            "localhost",
            PG_DB,
            &format!(
                "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
                pki.ca.display(),
                pki.client.cert.display(),
                pki.client.key.display()
            ),
        );
        let py = Driver::start(Path::new(&wzurl));
        Env {
            wcfs: None,
            py,
            zeo: None,
            pg_replica: None,
            pg: Some(pg),
            neo: None,
            datafs: dir.path().join("data.fs"),
            zurl,
            dir,
        }
    }

    /// For a [`Env::new_pg_tls`] Env: the same TLS settings from libpq's
    /// defaults instead of the zurl — a zurl without them, and the
    /// daemon's environment: `HOME` with `.postgresql/root.crt`,
    /// `postgresql.crt` and `postgresql.key`, and `PGSSLMODE=verify-full`.
    pub fn pg_tls_defaults(&self) -> (String, Vec<(String, String)>) {
        use std::os::unix::fs::PermissionsExt;
        let pki = self.dir.path().join("pki");
        let home = self.dir.path().join("home");
        let dot = home.join(".postgresql");
        std::fs::create_dir_all(&dot).unwrap();
        for (from, to) in [
            ("ca.pem", "root.crt"),
            ("client.pem", "postgresql.crt"),
            ("client.key", "postgresql.key"),
        ] {
            std::fs::copy(pki.join(from), dot.join(to)).unwrap();
        }
        std::fs::set_permissions(
            dot.join("postgresql.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let pg = self.pg.as_ref().expect("a new_pg_tls Env");
        let zurl = pg.zurl_with(PG_TLS_ROLE, "localhost", PG_DB, "");
        let vars = vec![
            ("HOME".to_string(), home.display().to_string()),
            ("PGSSLMODE".to_string(), "verify-full".to_string()),
        ];
        (zurl, vars)
    }

    /// The zurl of the primary (where Python commits), for a `new_pg` Env.
    pub fn pg_writer_zurl(&self) -> String {
        self.pg.as_ref().expect("a new_pg Env").zurl(PG_DB)
    }

    /// What the Python helper scripts open: the data.fs, the ZEO server,
    /// the PostgreSQL primary, or the NEO cluster.
    pub fn storage_arg(&self) -> PathBuf {
        if self.pg.is_some() {
            return PathBuf::from(self.pg_writer_zurl());
        }
        if let Some(neo) = &self.neo {
            return PathBuf::from(neo.zurl());
        }
        match &self.zeo {
            Some(z) => PathBuf::from(z.zurl()),
            None => self.datafs.clone(),
        }
    }

    /// Starts the daemon on `<dir>/mnt` with extra `args`.
    pub fn mount(&mut self, args: &[&str]) -> &Wcfs {
        self.mount_with_env(args, &[])
    }

    /// Like [`Env::mount`], with more variables in the daemon's
    /// environment.
    pub fn mount_with_env(&mut self, args: &[&str], vars: &[(String, String)]) -> &Wcfs {
        let mnt = self.dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let log = self.dir.path().join("wcfsd.log");
        let w = Wcfs::start_with_env(&self.zurl, &mnt, &log, args, vars)
            .unwrap_or_else(|e| panic!("{e}"));
        self.wcfs = Some(w);
        self.wcfs.as_ref().unwrap()
    }

    pub fn w(&self) -> &Wcfs {
        self.wcfs.as_ref().expect("mounted")
    }

    pub fn w_mut(&mut self) -> &mut Wcfs {
        self.wcfs.as_mut().expect("mounted")
    }

    /// Commits with the driver and waits until head/at shows the tid.
    pub fn commit(&mut self) -> Tid {
        let tid = self.py.commit();
        if let Some(w) = &self.wcfs {
            w.wait_head(tid);
        }
        tid
    }

    /// Python's block (latest, or at `at`) vs head/ (or @at/) through read(2).
    pub fn check_block(&mut self, file: Oid, blk: u64, blksize: u64, at: Option<Tid>) {
        let want = self.py.block(file, blk, at);
        let size = self.py.size(file, at);
        let want = &want[..want.len().min(size.saturating_sub(blk * blksize) as usize)];
        let got = match at {
            None => self.w().read_block(file, blk, blksize),
            Some(at) => self.w().read_block_at(at, file, blk, blksize),
        };
        assert!(
            got == want,
            "file {file} blk #{blk} at {at:?}: got {} bytes {:?}…, want {} bytes {:?}…",
            got.len(),
            &got[..got.len().min(16)],
            want.len(),
            &want[..want.len().min(16)]
        );
    }
}

/// Errno of an io::Error (0 if none).
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

// --- Added for fs_oracle.rs, fs_reset.rs, fs_concurrent.rs ---

/// The shape of a blktab as Python sees it (driver op "shape").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Levels, the bucket level included (0: empty tree).
    pub depth: u32,
    /// The tree keeps its only bucket inline in its own record.
    pub inline: bool,
    pub nkeys: u64,
}

impl Driver {
    /// Size and sha1 (hex) of the whole file as Python sees it at `at`
    /// (None: latest): every blktab item loaded through the ZBlk classes,
    /// holes zero-filled, blocks padded.
    pub fn sha(&mut self, file: Oid, at: Option<Tid>) -> (u64, String) {
        let w = self.word(
            &format!(
                r#"{{"op":"sha","file":"{file}","at":{}}}"#,
                Self::at_json(at)
            ),
            "sha",
        );
        let (size, sha) = w.split_once(' ').expect("sha SIZE HEX");
        (size.parse().unwrap(), sha.to_string())
    }

    /// The whole file as Python sees it at `at` (None: latest).
    pub fn content(&mut self, file: Oid, at: Option<Tid>) -> Vec<u8> {
        let n: usize = self
            .word(
                &format!(
                    r#"{{"op":"content","file":"{file}","at":{}}}"#,
                    Self::at_json(at)
                ),
                "data",
            )
            .parse()
            .unwrap();
        let mut buf = vec![0; n];
        self.out
            .read_exact(&mut buf)
            .expect("file content from driver");
        buf
    }

    /// The blktab's shape (BTree levels via `__getstate__`).
    pub fn shape(&mut self, file: Oid, at: Option<Tid>) -> Shape {
        let w = self.word(
            &format!(
                r#"{{"op":"shape","file":"{file}","at":{}}}"#,
                Self::at_json(at)
            ),
            "shape",
        );
        let v: Vec<u64> = w.split(' ').map(|x| x.parse().unwrap()).collect();
        Shape {
            depth: v[0] as u32,
            inline: v[1] != 0,
            nkeys: v[2],
        }
    }

    /// Sets keys lo..lo+n to ZBlk0s from a pool shared by the file's blocks
    /// (each a new ZBlk0 of its own with probability `unique`).
    pub fn insrange(&mut self, file: Oid, lo: u64, n: u64, seed: u64, unique: f64) {
        self.cmd(&format!(
            r#"{{"op":"insrange","file":"{file}","lo":{lo},"n":{n},"seed":{seed},"unique":{unique}}}"#
        ));
    }

    /// Deletes keys lo..lo+n.
    pub fn delrange(&mut self, file: Oid, lo: u64, n: u64) {
        self.cmd(&format!(
            r#"{{"op":"delrange","file":"{file}","lo":{lo},"n":{n}}}"#
        ));
    }

    /// blktab[dst] = blktab[src] (the ZBlk is then shared), and deletes src
    /// if `mv`. Nothing if src is a hole.
    pub fn link(&mut self, file: Oid, src: u64, dst: u64, mv: bool) {
        self.cmd(&format!(
            r#"{{"op":"link","file":"{file}","src":{src},"dst":{dst},"move":{mv}}}"#
        ));
    }

    /// Replaces bytes [off, off+data.len()) of block `blk` and stores the
    /// block as `kind` (a ZBlk1 of the same chunk size rewrites only the
    /// changed chunks).
    pub fn patch(
        &mut self,
        file: Oid,
        blk: u64,
        off: u64,
        data: &[u8],
        kind: &str,
        chunksize: Option<u64>,
    ) {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        let cs = chunksize.map_or("null".to_string(), |c| c.to_string());
        self.cmd(&format!(
            r#"{{"op":"patch","file":"{file}","blk":{blk},"off":{off},"data":"{hex}","kind":"{kind}","chunksize":{cs}}}"#
        ));
    }

    /// Like [`Driver::write`] with a ZBlk1 chunk size.
    pub fn write_chunked(&mut self, file: Oid, blk: u64, kind: &str, data: &[u8], chunksize: u64) {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        self.cmd(&format!(
            r#"{{"op":"write","file":"{file}","blk":{blk},"kind":"{kind}","data":"{hex}","chunksize":{chunksize}}}"#
        ));
    }

    /// The ZBigFile gets a new blktab: keys 0..nblk, every 3rd one a hole
    /// (not the last), new ZBlk0s of random bytes from `seed`.
    pub fn newblktab(&mut self, file: Oid, nblk: u64, seed: u64) {
        self.cmd(&format!(
            r#"{{"op":"newblktab","file":"{file}","nblk":{nblk},"seed":{seed}}}"#
        ));
    }

    /// The ZBigFile's blksize changes; its blocks stay.
    pub fn setblksize(&mut self, file: Oid, blksize: u64) {
        self.cmd(&format!(
            r#"{{"op":"setblksize","file":"{file}","blksize":{blksize}}}"#
        ));
    }

    /// Changes an object that belongs to no file.
    pub fn touch(&mut self) {
        self.cmd(r#"{"op":"touch"}"#);
    }

    /// Waits until a ZEO driver is connected again (after a server
    /// restart) and starts a fresh transaction.
    pub fn connected(&mut self) {
        self.cmd(r#"{"op":"connected"}"#);
    }
}

/// Block `blk` of an open file, read with pread(2) (short at EOF).
pub fn read_block_of(f: &std::fs::File, blk: u64, blksize: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; blksize as usize];
    let mut n = 0;
    while n < buf.len() {
        let k = f.read_at(&mut buf[n..], blk * blksize + n as u64)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    buf.truncate(n);
    Ok(buf)
}

/// Which pages of `map` are in the page cache (mincore(2)).
pub fn resident(map: &[u8]) -> Vec<bool> {
    // SAFETY: sysconf has no preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut vec = vec![0u8; map.len().div_ceil(ps)];
    // SAFETY: `map` is a live mapping of map.len() bytes starting at a page
    // boundary (callers pass whole mappings), and `vec` has one byte per
    // page of it, as mincore requires.
    let r = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            vec.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().map(|b| b & 1 != 0).collect()
}
