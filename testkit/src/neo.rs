//! Throwaway NEO clusters for the tests of the NEO storage: started on
//! loopback by `../shared/neo/neo-cluster` (beside the repository, as CI
//! lays it out), in a temporary directory, stopped when the [`NeoCluster`]
//! is dropped.
//!
//! The script installs neoppod into a venv, once: `$NEO_VENV`, by default
//! `target/neo-venv` of this repository (built under the script's flock,
//! so parallel tests share it; `dev/setup` builds it ahead).
//!
//! Without the script, a test skips ([`NeoCluster::available`] says why)
//! — except under `CI=true`, where a missing cluster is a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `neo-cluster` script, if the shared folder is beside the repo.
pub fn script() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WCFS_NEO_CLUSTER") {
        return Some(PathBuf::from(p));
    }
    let p = crate::repo().join("../shared/neo/neo-cluster");
    p.exists().then_some(p)
}

/// The environment of the `neo-cluster` script: its venv, and on the
/// PYTHONPATH `testkit/neo-site`, whose `sitecustomize` makes the nodes
/// log big packets without their arguments (see there: else a storage
/// node holds on to every block it sends, GiBs, and writes them all to
/// its log at its first warning, answering nothing meanwhile).
fn script_env() -> [(&'static str, std::ffi::OsString); 2] {
    let site = crate::repo().join("testkit/neo-site");
    let path = match std::env::var_os("PYTHONPATH") {
        Some(p) if !p.is_empty() => {
            let mut v = site.into_os_string();
            v.push(":");
            v.push(p);
            v
        }
        _ => site.into_os_string(),
    };
    [("NEO_VENV", venv().into_os_string()), ("PYTHONPATH", path)]
}

/// The venv the clusters run from (and the Python oracle uses).
pub fn venv() -> PathBuf {
    match std::env::var_os("NEO_VENV") {
        Some(p) => PathBuf::from(p),
        None => crate::repo().join("target/neo-venv"),
    }
}

/// A running NEO cluster.
pub struct NeoCluster {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    script: PathBuf,
    masters: u32,
    storages: u32,
}

impl NeoCluster {
    /// Whether NEO clusters can be started here; prints why not (the test
    /// then returns), and panics instead under `CI=true`.
    pub fn available(test: &str) -> bool {
        if script().is_some() {
            return true;
        }
        let why = "../shared/neo/neo-cluster not found beside the repository \
                   (set WCFS_NEO_CLUSTER to the script)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {why}");
        }
        eprintln!("{test}: SKIPPED: {why}");
        false
    }

    /// Starts a cluster and waits for it to be RUNNING.
    pub fn start(masters: u32, storages: u32, replicas: u32) -> NeoCluster {
        Self::start_with(masters, storages, replicas, 12)
    }

    pub fn start_with(masters: u32, storages: u32, replicas: u32, partitions: u32) -> NeoCluster {
        Self::start_full(masters, storages, replicas, partitions, None)
    }

    /// Starts a cluster named `name` (another cluster's name: two
    /// clusters a client cannot tell apart by name).
    pub fn start_named(name: &str, masters: u32, storages: u32, replicas: u32) -> NeoCluster {
        Self::start_full(masters, storages, replicas, 12, Some(name))
    }

    fn start_full(
        masters: u32,
        storages: u32,
        replicas: u32,
        partitions: u32,
        name: Option<&str>,
    ) -> NeoCluster {
        let script = script().expect("neo-cluster script (check NeoCluster::available first)");
        let dir = tempfile::Builder::new()
            .prefix("wcfs-neo-")
            .tempdir()
            .expect("temporary directory");
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .args(["--masters", &masters.to_string()])
            .args(["--storages", &storages.to_string()])
            .args(["--replicas", &replicas.to_string()])
            .args(["--partitions", &partitions.to_string()])
            .args(name.map(|n| ["--name", n]).into_iter().flatten())
            .envs(script_env())
            .output()
            .expect("running neo-cluster start");
        assert!(
            out.status.success(),
            "neo-cluster start failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>();
        for k in ["NEO_ZURL", "NEO_MASTERS", "NEO_NAME"] {
            assert!(env.contains_key(k), "neo-cluster start printed no {k}");
        }
        NeoCluster {
            dir,
            env,
            script,
            masters,
            storages,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `neo://NAME@MASTER[,MASTER…]`.
    pub fn zurl(&self) -> String {
        self.env["NEO_ZURL"].clone()
    }

    /// `HOST:PORT[,HOST:PORT…]`.
    pub fn masters(&self) -> String {
        self.env["NEO_MASTERS"].clone()
    }

    pub fn name(&self) -> String {
        self.env["NEO_NAME"].clone()
    }

    /// The storage nodes' `HOST:PORT`, in order.
    pub fn storages(&self) -> Vec<String> {
        self.env["NEO_STORAGES"]
            .split(',')
            .map(str::to_string)
            .collect()
    }

    /// The pids of the storage nodes running now, in order (for
    /// measurements: their CPU time).
    pub fn storage_pids(&self) -> Vec<u32> {
        (0..self.storages)
            .filter_map(|i| {
                let p = self.dir().join(format!("pids/storage{i}.pid"));
                std::fs::read_to_string(p).ok()?.trim().parse().ok()
            })
            .collect()
    }

    /// The venv's Python (with neoppod and ZODB).
    pub fn python(&self) -> PathBuf {
        venv().join("bin/python")
    }

    /// Environment for a Python client of this cluster (`NEO_MASTERS`,
    /// `NEO_NAME`).
    pub fn python_env(&self, cmd: &mut Command) {
        cmd.env("NEO_MASTERS", self.masters())
            .env("NEO_NAME", self.name());
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(&self.script)
            .args(args.iter().take(1))
            .arg(self.dir.path())
            .args(args.iter().skip(1))
            .envs(script_env())
            .output()
            .expect("running neo-cluster");
        assert!(
            out.status.success(),
            "neo-cluster {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILL of storage node `i`.
    pub fn kill_storage(&self, i: u32) {
        self.run(&["kill-storage", &i.to_string()]);
    }

    /// Starts storage node `i` again; returns once the cluster is RUNNING
    /// and every cell UP_TO_DATE.
    pub fn restart_storage(&self, i: u32) {
        self.run(&["restart-storage", &i.to_string()]);
    }

    pub fn kill_master(&self, i: u32) {
        self.run(&["kill-master", &i.to_string()]);
    }

    pub fn restart_master(&self, i: u32) {
        self.run(&["restart-master", &i.to_string()]);
    }

    /// The whole cluster stopped (every storage node and master killed)
    /// and started again on the same data and ports; returns once it is
    /// RUNNING with every cell up to date. (Restarted together: a master
    /// alone, or storage nodes alone, never get RUNNING.)
    pub fn restart_all(&self) {
        for i in 0..self.storages {
            self.kill_storage(i);
        }
        for i in 0..self.masters {
            self.kill_master(i);
        }
        self.start_stopped();
    }

    /// The cluster stopped and started again with its masters listening
    /// at `masters` (`HOST:PORT[,…]`, as [`NeoCluster::masters`] gives
    /// them: another cluster's, stopped before), on its own data: what a
    /// client of that other cluster finds at the same address afterwards.
    /// (`neo-cluster start` picks free ports itself; its `restart-*`
    /// commands take the ports from `DIR/cluster.env`, so we rewrite them
    /// there, and start the admin node, which has no restart command, as
    /// `neo-cluster` does.)
    pub fn move_masters_to(&mut self, masters: &str) {
        let ports: Vec<&str> = masters
            .split(',')
            .map(|a| a.rsplit_once(':').expect("HOST:PORT").1)
            .collect();
        assert_eq!(ports.len(), self.masters as usize, "one port per master");
        self.stop();
        let envf = self.dir().join("cluster.env");
        let conf = std::fs::read_to_string(&envf).expect("cluster.env");
        let get = |k: &str| {
            conf.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k} in cluster.env"))
                .trim_matches('"')
                .to_string()
        };
        let conf: String = conf
            .lines()
            .map(|l| {
                if l.starts_with("C_MASTER_PORTS=") {
                    format!("C_MASTER_PORTS=\"{}\"\n", ports.join(" "))
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&envf, conf).expect("rewrite cluster.env");
        let host = masters
            .split(',')
            .next()
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .0;
        let spaced: Vec<String> = ports.iter().map(|p| format!("{host}:{p}")).collect();
        let logs = self.dir().join("logs");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join("admin.out"))
            .expect("admin.out");
        // setsid, as neo-cluster does: the node outlives nothing of ours
        // but is stopped by `neo-cluster stop`, which finds it by its pid
        // file and log path. (Not a group leader here, setsid execs in
        // place: the pid is the node's.)
        let mut admin = Command::new("setsid")
            .arg(venv().join("bin/neoadmin"))
            .args(["-c", &get("C_NAME"), "-m", &spaced.join(" ")])
            .args(["-b", &format!("{host}:{}", get("C_ADMIN_PORT"))])
            .arg("-l")
            .arg(logs.join("admin.log"))
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting neoadmin");
        std::fs::write(
            self.dir().join("pids/admin.pid"),
            format!("{}\n", admin.id()),
        )
        .expect("admin.pid");
        // Reaped when it ends (`neo-cluster stop`), so that it leaves no
        // zombie behind for the script to take as alive.
        std::thread::spawn(move || admin.wait());
        let masters = spaced.join(",");
        let zurl = format!("neo://{}@{masters}", self.name());
        self.env.insert("NEO_MASTERS".into(), masters);
        self.env.insert("NEO_ZURL".into(), zurl);
        self.start_stopped();
    }

    /// Every node started again (after every one was killed or stopped);
    /// returns once the cluster is RUNNING with every cell up to date.
    fn start_stopped(&self) {
        std::thread::scope(|s| {
            for i in 0..self.masters {
                s.spawn(move || self.restart_master(i));
            }
            for i in 0..self.storages {
                s.spawn(move || self.restart_storage(i));
            }
        });
        self.wait();
    }

    /// Waits for the cluster to be RUNNING.
    pub fn wait(&self) {
        self.run(&["wait"]);
    }

    /// What `neo-cluster status` prints (for failure messages).
    pub fn status(&self) -> String {
        let out = Command::new(&self.script)
            .arg("status")
            .arg(self.dir.path())
            .envs(script_env())
            .output()
            .expect("running neo-cluster status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn stop(&self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .envs(script_env())
            .output();
    }
}

impl Drop for NeoCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
