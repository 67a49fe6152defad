//! Shared helpers for the workspace's tests and benches (see README.md).
//!
//! Tests compare what our code says with an independent oracle — Python's
//! ZODB reading the same data — so finding that Python is the first thing
//! most tests do. Everything here panics with a clear message instead of
//! returning errors: a test that cannot run its oracle must fail, loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod certs;
pub mod neo;
pub mod pg;
pub use pg::{Frozen, PgServer};

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf()
}

/// The Python interpreter with ZODB, BTrees and ZEO installed.
pub fn python() -> PathBuf {
    let py = match std::env::var_os("WCFS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => repo().join(".venv/bin/python"),
    };
    assert!(
        py.exists(),
        "Python with ZODB not found at {}: run dev/setup (it makes .venv), \
         or set WCFS_PYTHON to a Python that has ZODB installed",
        py.display()
    );
    py
}

/// Runs `python <repo>/<script> <args…>`; panics with its stderr if it
/// fails, else returns its stdout.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Vec<u8> {
    let path = repo().join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The seed of a randomized test: `WCFS_TEST_SEED` if set, else taken from
/// the clock. Printed (on stderr, which the test harness shows for failing
/// tests) with the way to reproduce.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("WCFS_TEST_SEED") {
        Ok(s) => s.parse().expect("WCFS_TEST_SEED: want an integer"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            (t.as_nanos() % 1_000_000) as u64
        }
    };
    eprintln!("{test}: seed {seed} (reproduce with WCFS_TEST_SEED={seed})");
    seed
}

/// SHA-1 of `data` in hex, to compare with Python's `hashlib.sha1`.
pub fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// A small deterministic PRNG (xorshift64*). Not for anything but tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // xorshift must not start at 0; mix the seed so nearby seeds differ.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// The `wcfsd` binary built by this cargo invocation, for tests outside the
/// daemon crate (inside it, use `env!("CARGO_BIN_EXE_wcfsd")`): found next
/// to the running test executable (`target/<profile>/deps/x` →
/// `target/<profile>/wcfsd`), built with cargo first when it is missing.
pub fn wcfsd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join("wcfsd");
    if !bin.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "-q", "-p", "wcfsd", "--bin", "wcfsd"])
            .current_dir(repo());
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("running cargo build -p wcfsd");
        assert!(st.success(), "cargo build -p wcfsd failed");
    }
    assert!(bin.exists(), "wcfsd not found at {}", bin.display());
    bin
}

/// A real ZEO server (`python -m ZEO.runzeo`) serving a FileStorage on a
/// free loopback port (or on a Unix socket, or several named FileStorages
/// from a config file: [`ZeoServer::start_config`]); killed when dropped.
/// Its log is `<data.fs>.zeo.log` (the first storage's data.fs).
pub struct ZeoServer {
    child: Option<std::process::Child>,
    /// The TCP port (0 when on a Unix socket).
    pub port: u16,
    pub log: PathBuf,
    datafs: PathBuf,
    msgpack: bool,
    /// The Unix socket it listens on, instead of a port.
    pub socket: Option<PathBuf>,
    /// Named storages `<filestorage NAME>` (empty: `-f datafs`, named "1").
    storages: Vec<(String, PathBuf)>,
    /// With TLS (`<ssl>`): the test's certificates, and the server's own.
    tls: Option<(certs::Pki, certs::CertFiles)>,
}

impl ZeoServer {
    /// Starts `runzeo -a 127.0.0.1:PORT -f datafs` and waits until it
    /// accepts connections. A free port is picked by binding port 0; should
    /// another process take it first, the server fails and we retry.
    pub fn start(datafs: &Path) -> ZeoServer {
        Self::start_with(datafs, false)
    }

    /// Like [`ZeoServer::start`]; with `msgpack`, the server marshals
    /// messages with msgpack (`$ZEO_MSGPACK`) instead of pickle.
    pub fn start_with(datafs: &Path, msgpack: bool) -> ZeoServer {
        Self::start_any(datafs, msgpack, None, Vec::new())
    }

    /// `runzeo -C CONFIG` serving each `(name, data.fs)` of `storages` as a
    /// `<filestorage NAME>` section (ZConfig makes names lower case: give
    /// them so), on `socket` (a Unix socket) or else a free loopback port.
    pub fn start_config(storages: &[(&str, &Path)], socket: Option<&Path>) -> ZeoServer {
        let storages: Vec<(String, PathBuf)> = storages
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect();
        let datafs = storages.first().expect("a storage").1.clone();
        Self::start_any(&datafs, false, socket.map(Path::to_path_buf), storages)
    }

    /// `runzeo` over TLS only, as ZEO sets it up: an `<ssl>` section with
    /// the server's certificate `server` (one of `pki`'s) and client
    /// authentication against `pki`'s CA (`authenticate`: runzeo always
    /// wants a client certificate). On a free loopback port, or `socket`.
    pub fn start_tls(
        datafs: &Path,
        pki: &certs::Pki,
        server: &certs::CertFiles,
        socket: Option<&Path>,
    ) -> ZeoServer {
        let storages = vec![("1".to_string(), datafs.to_path_buf())];
        let tls = Some((pki.clone(), server.clone()));
        Self::start_inner(datafs, false, socket.map(Path::to_path_buf), storages, tls)
    }

    fn start_any(
        datafs: &Path,
        msgpack: bool,
        socket: Option<PathBuf>,
        storages: Vec<(String, PathBuf)>,
    ) -> ZeoServer {
        Self::start_inner(datafs, msgpack, socket, storages, None)
    }

    fn start_inner(
        datafs: &Path,
        msgpack: bool,
        socket: Option<PathBuf>,
        storages: Vec<(String, PathBuf)>,
        tls: Option<(certs::Pki, certs::CertFiles)>,
    ) -> ZeoServer {
        let mut s = ZeoServer {
            tls,
            child: None,
            port: 0,
            log: Self::log_path(datafs),
            datafs: datafs.to_path_buf(),
            msgpack,
            socket,
            storages,
        };
        for _ in 0..5 {
            if s.socket.is_none() {
                s.port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("pick a free port")
                    .port();
            }
            if s.try_start(1) {
                return s;
            }
        }
        panic!(
            "runzeo did not start; its log:\n{}",
            std::fs::read_to_string(Self::log_path(datafs)).unwrap_or_default()
        );
    }

    fn log_path(datafs: &Path) -> PathBuf {
        let mut log = datafs.as_os_str().to_owned();
        log.push(".zeo.log");
        PathBuf::from(log)
    }

    /// Where it listens, as runzeo's `-a` and `address` take it.
    fn listen(&self) -> String {
        match &self.socket {
            Some(p) => p.display().to_string(),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    fn accepts(&self) -> bool {
        match &self.socket {
            Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            None => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        }
    }

    /// runzeo (tried `tries` times, 1 s apart: a port just released may
    /// still be busy), once it accepts connections.
    fn try_start(&mut self, tries: usize) -> bool {
        let mut args: Vec<std::ffi::OsString> = vec!["-m".into(), "ZEO.runzeo".into()];
        if self.storages.is_empty() {
            args.extend(["-a".into(), self.listen().into(), "-f".into()]);
            args.push(self.datafs.clone().into());
        } else {
            let ssl = match &self.tls {
                Some((pki, server)) => format!(
                    "  <ssl>\n    certificate {}\n    key {}\n    authenticate {}\n  </ssl>\n",
                    server.cert.display(),
                    server.key.display(),
                    pki.ca.display()
                ),
                None => String::new(),
            };
            let mut conf = format!("<zeo>\n  address {}\n{ssl}</zeo>\n", self.listen());
            for (name, path) in &self.storages {
                conf += &format!(
                    "<filestorage {name}>\n  path {}\n</filestorage>\n",
                    path.display()
                );
            }
            let mut cpath = self.datafs.as_os_str().to_owned();
            cpath.push(".zeo.conf");
            std::fs::write(&cpath, conf).expect("write runzeo config");
            args.extend(["-C".into(), cpath]);
        }
        for _ in 0..tries {
            if let Some(p) = &self.socket {
                let _ = std::fs::remove_file(p); // a killed server's
            }
            let logf = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("open zeo log");
            let mut child = Command::new(python())
                .args(&args)
                .env_remove("ZEO_MSGPACK")
                .envs(self.msgpack.then_some(("ZEO_MSGPACK", "1")))
                .stdin(std::process::Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .expect("start runzeo");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken, or worse: retry, then report
                }
                if self.accepts() {
                    self.child = Some(child);
                    return true;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        false
    }

    /// Starts the server again (after [`ZeoServer::kill`], or killing it
    /// first) on the same port, serving `datafs` (None: the same data.fs
    /// as before): a server restart as clients see it.
    pub fn restart(&mut self, datafs: Option<&Path>) {
        self.kill();
        if let Some(d) = datafs {
            assert!(
                self.storages.is_empty(),
                "restart on another data.fs: -f servers only"
            );
            self.datafs = d.to_path_buf();
            self.log = Self::log_path(d);
        }
        if !self.try_start(10) {
            panic!(
                "runzeo did not restart at {}; its log:\n{}",
                self.listen(),
                self.log_text()
            );
        }
    }

    /// `zeo://127.0.0.1:PORT`, or `zeo://SOCKET` — as upstream's
    /// `zstor_2zurl` writes it for storage "1". With TLS,
    /// `zeos://…?ca=…&cert=…&key=…` with the test's CA and client
    /// certificate (and `server_hostname=localhost` on a socket).
    pub fn zurl(&self) -> String {
        match &self.tls {
            Some((pki, _)) => self.zurl_tls(&pki.ca, Some(&pki.client), None),
            None => format!("zeo://{}", self.listen()),
        }
    }

    /// `zeos://` to this server with CA `ca`, client certificate `client`
    /// and `server_hostname` (None: none on TCP, `localhost` on a socket).
    pub fn zurl_tls(
        &self,
        ca: &Path,
        client: Option<&certs::CertFiles>,
        server_hostname: Option<&str>,
    ) -> String {
        let mut z = format!("zeos://{}?ca={}", self.listen(), ca.display());
        if let Some(c) = client {
            z += &format!("&cert={}&key={}", c.cert.display(), c.key.display());
        }
        let name = server_hostname.or(self.socket.as_ref().map(|_| "localhost"));
        if let Some(n) = name {
            z += &format!("&server_hostname={n}");
        }
        z
    }

    /// The zurl of storage `name` (`…?storage=NAME` unless "1").
    pub fn zurl_of(&self, name: &str) -> String {
        if name == "1" {
            self.zurl()
        } else if self.tls.is_some() {
            format!("{}&storage={name}", self.zurl())
        } else {
            format!("{}?storage={name}", self.zurl())
        }
    }

    /// `127.0.0.1:PORT` (or the socket path), as the Python scripts take it.
    pub fn addr(&self) -> String {
        self.listen()
    }

    /// The server's pid (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ZeoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A benchmark database: one ZBigFile of random bytes in ZBlk0 blocks,
/// written by `python/wcfs_testdata/benchgen.py`.
#[derive(Debug, Clone)]
pub struct BenchData {
    pub path: PathBuf,
    /// The ZBigFile's oid.
    pub oid: u64,
    pub blksize: u64,
    pub nblk: u64,
}

/// The bench database `bench-data/<name>/data.fs` (gitignored) of `mib` MiB
/// in blocks of `blksize`: generated once, again when missing or of another
/// shape (benchgen.py records the shape in `data.fs.info`).
pub fn bench_data(name: &str, mib: u64, blksize: u64) -> BenchData {
    let dir = repo().join("bench-data").join(name);
    let path = dir.join("data.fs");
    let info = dir.join("data.fs.info");
    let nblk = (mib << 20) / blksize;
    let current = read_bench_info(&path, &info);
    if let Some(d) = current.filter(|d| d.blksize == blksize && d.nblk == nblk) {
        if path.exists() {
            return d;
        }
    }
    std::fs::create_dir_all(&dir).expect("create bench-data dir");
    println!("generating {} ({mib} MiB, once)...", path.display());
    let st = Command::new(python())
        .arg(repo().join("python/wcfs_testdata/benchgen.py"))
        .arg(&path)
        .args(["--mib", &mib.to_string(), "--blksize", &blksize.to_string()])
        .status()
        .expect("run benchgen.py");
    assert!(st.success(), "benchgen.py failed");
    read_bench_info(&path, &info).expect("benchgen.py wrote no data.fs.info")
}

/// `oid=<hex> blksize=<n> nblk=<n>` as benchgen.py writes it.
fn read_bench_info(path: &Path, info: &Path) -> Option<BenchData> {
    let text = std::fs::read_to_string(info).ok()?;
    let (mut oid, mut blksize, mut nblk) = (None, None, None);
    for w in text.split_ascii_whitespace() {
        match w.split_once('=')? {
            ("oid", v) => oid = u64::from_str_radix(v, 16).ok(),
            ("blksize", v) => blksize = v.parse().ok(),
            ("nblk", v) => nblk = v.parse().ok(),
            _ => {}
        }
    }
    Some(BenchData {
        path: path.to_path_buf(),
        oid: oid?,
        blksize: blksize?,
        nblk: nblk?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_spread() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        for d in 0..10 {
            assert!(xs.contains(&d), "{d} never drawn in 100 tries");
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn sha1_matches_known_answers() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn repo_has_the_python_scripts() {
        assert!(repo().join("python/requirements.txt").exists());
    }
}
