//! Throwaway PostgreSQL clusters for the tests of the PostgreSQL
//! (RelStorage) storage: a primary, and streaming replicas of it (hot
//! standbys made with `pg_basebackup -R`), each in a temporary directory
//! under `/tmp` (`$WCFS_PG_TMPDIR`), listening on a free loopback port and
//! on a Unix socket in that directory.
//!
//! PostgreSQL refuses to run as root: when we are root, every server
//! program runs as the `postgres` user (Debian's package creates it) and
//! the directory belongs to it. The binaries are those of the newest
//! `/usr/lib/postgresql/<version>/bin` (or `$WCFS_PG_BIN`).
//!
//! A cluster is stopped and its directory removed when its `PgServer` is
//! dropped — and also when the test process ends without dropping it (a
//! cluster shared by the tests of a binary lives in a static; a test may
//! abort): a guardian process, started with the cluster, waits for the
//! end of a pipe only the test process holds, then stops the server and
//! removes the directory.
//!
//! Access (`pg_hba.conf`): `postgres` may connect over TCP without a
//! password (the Python writers and the tests' own `psql` use it), as may
//! replication; any other role needs its password (scram-sha-256), so
//! that wrong credentials can be tested. A cluster started with
//! [`PgServer::start_tls`] takes TCP connections over TLS only, and other
//! roles log in by client certificate. Durability against losing the
//! machine is off (`fsync`, `full_page_writes`): these clusters die with
//! the test. Commits are synchronous (the default): a commit reported done
//! is in the kernel, so it survives a killed server — with
//! `synchronous_commit = off` the last commits die with a kill -9, and
//! the driver rightly calls the database another one.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the PostgreSQL server programs are.
pub fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WCFS_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server programs not found under /usr/lib/postgresql/*/bin: \
             run dev/setup (it installs Debian's postgresql), or set WCFS_PG_BIN"
        )
    })
}

/// The uid and gid to run the server as: `postgres` when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns null or a pointer to a static entry, read at
    // once (tests do not call it concurrently with anything that rewrites it
    // in a way that matters: worst case a wrong id and a clear failure).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, and there is no `postgres` user to run PostgreSQL as: \
         run dev/setup (Debian's postgresql package creates it)"
    );
    // SAFETY: pw is non-null and points at a valid passwd entry.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// Where clusters are made: `$WCFS_PG_TMPDIR`, else `/tmp` (not
/// `$TMPDIR`: the server's user must be able to reach it, and a root's
/// private temporary directory would not do).
fn tmp_root() -> PathBuf {
    std::env::var_os("WCFS_PG_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port()
}

fn chown(p: &Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    }
}

/// A new temporary directory for a cluster, owned by the server's user:
/// it, its `data` (not created: initdb or pg_basebackup makes it) and its
/// socket directory `sock`.
fn cluster_dir(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(tmp_root())
        .expect("temp dir for a PostgreSQL cluster");
    chown(tmp.path());
    let data = tmp.path().join("data");
    let sock = tmp.path().join("sock");
    std::fs::create_dir(&sock).unwrap();
    chown(&sock);
    (tmp, data, sock)
}

/// A running cluster (a primary, or a standby of one).
pub struct PgServer {
    /// The temporary directory (data, socket, log); removed on drop.
    tmp: Option<tempfile::TempDir>,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    bin: PathBuf,
    running: bool,
    standby: bool,
    /// The guardian: when its stdin closes, it stops the server and
    /// removes the directory.
    guardian: Option<Guardian>,
}

impl PgServer {
    /// Runs a server program as the server's user.
    fn cmd(&self, prog: &str) -> Command {
        server_cmd(&self.bin, prog, self.dir())
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.tmp.as_ref().map(|t| t.path()).expect("cluster dir")
    }

    /// initdb and start a fresh primary.
    pub fn start() -> PgServer {
        Self::start_with("")
    }

    /// Like [`PgServer::start`], with more `postgresql.conf` lines (e.g.
    /// `shared_buffers = 1GB` for benchmarks).
    pub fn start_with(conf: &str) -> PgServer {
        let mut s = Self::init();
        append(&s.data.join("postgresql.conf"), &format!("\n{conf}\n"));
        s.start_on_free_port();
        s
    }

    /// initdb and start a fresh primary with TLS (`ssl = on`), presenting
    /// `cert`/`key` and checking client certificates against `ca`. Access
    /// over TCP: TLS only (`hostnossl … reject`); `postgres` (the Python
    /// writers, whose libpq prefers TLS) and replication without a
    /// password, every other role by client certificate (`hostssl … cert`:
    /// its common name is the role).
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> PgServer {
        Self::start_tls_with("", ca, cert, key)
    }

    /// Like [`PgServer::start_tls`], with more `postgresql.conf` lines.
    pub fn start_tls_with(conf: &str, ca: &Path, cert: &Path, key: &Path) -> PgServer {
        let mut s = Self::init();
        s.set_tls_files(ca, cert, key);
        append(
            &s.data.join("postgresql.conf"),
            &format!(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 ssl_ca_file = 'ca.crt'\n{conf}\n"
            ),
        );
        std::fs::write(
            s.data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl replication all 127.0.0.1/32 trust\n\
             hostssl all postgres 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 cert\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        s.start_on_free_port();
        s
    }

    /// Replaces `pg_hba.conf` with `text` and restarts the server.
    pub fn set_hba(&mut self, text: &str) {
        std::fs::write(self.data.join("pg_hba.conf"), text).unwrap();
        self.pg_ctl_restart("fast");
    }

    /// Installs the server's certificate, key and client CA (copies in the
    /// data directory, the server's own); a running server uses them from
    /// its next restart (or `pg_reload_conf`).
    pub fn set_tls_files(&self, ca: &Path, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for (from, to) in [(ca, "ca.crt"), (cert, "server.crt"), (key, "server.key")] {
            let dst = self.data.join(to);
            std::fs::copy(from, &dst)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), dst.display()));
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
            chown(&dst);
        }
    }

    /// initdb and start a fresh primary on `port` (another server that
    /// was there must be stopped).
    pub fn start_on(port: u16) -> PgServer {
        let mut s = Self::init();
        s.port = port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.try_start() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {port}; its log:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    /// A fresh cluster, not started.
    fn init() -> PgServer {
        let bin = pg_bin();
        let (tmp, data, sock) = cluster_dir("wcfs-pg");
        let log = tmp.path().join("server.log");
        let out = server_cmd(&bin, "initdb", tmp.path())
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C")
            .output()
            .expect("run initdb");
        check(&out, "initdb");
        let conf = format!(
            "\n# wcfs tests\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\n\
             wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\n\
             max_connections = 100\nshared_buffers = 32MB\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            sock.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host replication all 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        PgServer {
            guardian: Some(guardian(&bin, &data, tmp.path())),
            tmp: Some(tmp),
            data,
            sock,
            log,
            port: 0,
            bin,
            running: false,
            standby: false,
        }
    }

    /// A streaming replica of this primary (`pg_basebackup -R`, hot
    /// standby), started.
    pub fn start_replica(&self) -> PgServer {
        let (tmp, data, sock) = cluster_dir("wcfs-pg-replica");
        let out = server_cmd(&self.bin, "pg_basebackup", tmp.path())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .output()
            .expect("run pg_basebackup");
        check(&out, "pg_basebackup");
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\n# the replica\nunix_socket_directories = '{}'\nhot_standby = on\n\
                 hot_standby_feedback = on\n",
                sock.display()
            ),
        );
        let mut s = PgServer {
            guardian: Some(guardian(&self.bin, &data, tmp.path())),
            log: tmp.path().join("server.log"),
            tmp: Some(tmp),
            data,
            sock,
            port: 0,
            bin: self.bin.clone(),
            running: false,
            standby: true,
        };
        s.start_on_free_port();
        s
    }

    /// Picks a free port and starts; should another process take the port
    /// first, tries another.
    fn start_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            if self.try_start() {
                return;
            }
        }
        panic!("PostgreSQL did not start; its log:\n{}", self.log_text());
    }

    /// Starts on `self.port` (already set); whether it came up.
    fn try_start(&mut self) -> bool {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl start");
        self.running = out.status.success();
        if self.running {
            self.wait_ready();
        }
        self.running
    }

    /// Waits until the server accepts connections (a standby: queries).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.run_psql("postgres", "SELECT 1");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not ready after 60s: {}\nits log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the stopped server again, on the same port.
    pub fn start_again(&mut self) {
        assert!(!self.running, "already running");
        let deadline = Instant::now() + Duration::from_secs(30);
        // After a kill -9, the old backends may hold the shared memory a
        // little longer: retry.
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start again on port {}; its log:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (fast: clients are disconnected).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", "fast", "stop"])
            .output()
            .expect("run pg_ctl stop");
        check(&out, "pg_ctl stop");
        self.running = false;
    }

    /// Stops the server and starts it again on `port`.
    pub fn move_to(&mut self, port: u16) {
        self.stop();
        self.port = port;
        self.start_again();
    }

    /// `pg_ctl restart -m MODE` ("smart", "fast" or "immediate": the last
    /// one kills the backends and makes the server recover from its WAL on
    /// the way up), on the same port; returns when it accepts connections.
    pub fn pg_ctl_restart(&mut self, mode: &str) {
        assert!(self.running, "not running");
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-m", mode, "-o"])
            .arg(format!("-p {}", self.port))
            .arg("restart")
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl restart");
        check(&out, "pg_ctl restart");
        self.wait_ready();
    }

    /// Stops the server and starts it again (not `pg_ctl restart`: the
    /// server is down in between for as long as starting takes).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The postmaster's pid.
    pub fn postmaster_pid(&self) -> u32 {
        let text =
            std::fs::read_to_string(self.data.join("postmaster.pid")).expect("read postmaster.pid");
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("pid in postmaster.pid")
    }

    /// Freezes the server — SIGSTOP to the postmaster, then to every
    /// process it started (backends, background workers) — until the guard
    /// is thawed or dropped (SIGCONT to them all): a server that keeps its
    /// connections (and its kernel keeps accepting new ones) but answers
    /// nothing.
    pub fn freeze(&self) -> Frozen {
        let pm = self.postmaster_pid() as i32;
        let mut f = Frozen { pids: Vec::new() };
        f.stop(pm);
        // The postmaster stopped forks no more: its children now are all.
        for pid in children_of(pm) {
            f.stop(pid);
        }
        f
    }

    /// kill -9 of the postmaster (its backends notice and exit).
    pub fn kill9(&mut self) {
        let pid = self.postmaster_pid();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.running = false;
    }

    /// `postgresql://postgres@127.0.0.1:PORT/db`.
    pub fn zurl(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `postgresql://user@HOST:PORT/db?PARAMS` (`params` without the `?`,
    /// may be empty).
    pub fn zurl_with(&self, user: &str, host: &str, db: &str, params: &str) -> String {
        let q = if params.is_empty() { "" } else { "?" };
        format!("postgresql://{user}@{host}:{}/{db}{q}{params}", self.port)
    }

    /// The same for `user` with `password`.
    pub fn zurl_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Runs psql on `sql` in database `db` as postgres. The statement goes
    /// in on stdin, never in psql's argv: tests run in parallel, and one
    /// test's `CREATE ROLE … PASSWORD` must not show in another test's `ps`.
    fn run_psql(&self, db: &str, sql: &str) -> Output {
        let mut c = self.cmd("psql");
        c.arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("run psql");
        {
            let mut stdin = child.stdin.take().expect("psql stdin");
            // psql may exit early (server down): the broken pipe then shows
            // as its failed status, which the callers report.
            let _ = stdin.write_all(sql.as_bytes());
            let _ = stdin.write_all(b"\n");
        }
        child.wait_with_output().expect("wait for psql")
    }

    /// Runs `sql` in database `db` as postgres; its output (unaligned,
    /// tuples only). Panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.run_psql(db, sql);
        check(&out, &format!("psql {sql:?}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Like [`PgServer::psql`]; Err(stderr) on failure.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self.run_psql(db, sql);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `CREATE DATABASE name` (on a primary).
    pub fn create_db(&self, name: &str) {
        assert!(!self.standby, "create_db on a standby");
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// A role that may log in with `password` and only read database
    /// `db` (SELECT on its tables, present ones: run after the schema is
    /// made).
    pub fn create_reader(&self, role: &str, password: &str, db: &str) {
        if self
            .try_psql(
                "postgres",
                &format!("SELECT 1 FROM pg_roles WHERE rolname = '{role}'"),
            )
            .is_ok_and(|o| o.is_empty())
        {
            self.psql(
                "postgres",
                &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"),
            );
        }
        self.psql(
            db,
            &format!(
                "GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\"; \
                 GRANT USAGE ON SCHEMA public TO \"{role}\"; \
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{role}\""
            ),
        );
    }

    /// Terminates the backends of database `db` whose application name is
    /// `app` (how many).
    pub fn terminate(&self, db: &str, app: &str) -> usize {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND application_name = '{app}'"
            ),
        );
        out.parse().unwrap_or(0)
    }

    /// The current WAL position of a primary.
    pub fn wal_lsn(&self) -> String {
        self.psql("postgres", "SELECT pg_current_wal_lsn()")
    }

    /// Waits until this standby has replayed the primary's WAL up to `lsn`.
    pub fn wait_replay(&self, lsn: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = self.psql(
                "postgres",
                &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
            );
            if done == "t" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "standby on port {} did not replay up to {lsn}; its log:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until this standby has everything `primary` has now.
    pub fn catch_up_with(&self, primary: &PgServer) {
        self.wait_replay(&primary.wal_lsn());
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // The guardian stops the server and removes the directory.
        if let Some(mut g) = self.guardian.take() {
            drop(g.stdin.take());
            let _ = g.child.wait();
        }
    }
}

/// A process that, once its stdin closes (we exited or dropped the
/// server), stops the server at `data` and removes `dir`.
struct Guardian {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

fn guardian(bin: &Path, data: &Path, dir: &Path) -> Guardian {
    let prog = bin.join("pg_ctl");
    let mut sh = Command::new("/bin/sh");
    sh.current_dir(dir);
    if let Some((uid, gid)) = server_user() {
        sh.uid(uid).gid(gid);
    }
    let mut child = sh
        .arg("-c")
        .arg(r#"cat >/dev/null 2>&1; "$0" -D "$1" -m immediate -w -t 30 stop >/dev/null 2>&1; rm -rf "$2""#)
        .arg(prog)
        .arg(data)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the cluster's guardian");
    let stdin = child.stdin.take();
    Guardian { child, stdin }
}

fn server_cmd(bin: &Path, prog: &str, cwd: &Path) -> Command {
    let mut c = Command::new(bin.join(prog));
    c.current_dir(cwd)
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE");
    if let Some((uid, gid)) = server_user() {
        // (std drops root's supplementary groups when it sets the uid.)
        c.uid(uid).gid(gid).env("HOME", cwd);
    }
    c
}

fn append(p: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(text.as_bytes()).unwrap();
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes stopped by [`PgServer::freeze`]: continued when dropped.
pub struct Frozen {
    pids: Vec<i32>,
}

impl Frozen {
    fn stop(&mut self, pid: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } == 0 {
            self.pids.push(pid);
        }
    }

    /// The processes stopped.
    pub fn pids(&self) -> &[i32] {
        &self.pids
    }

    /// SIGCONT to every process stopped.
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// The pids whose parent is `ppid` (from /proc/*/stat).
fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok())
            == Some(ppid)
        {
            out.push(pid);
        }
    }
    out
}
