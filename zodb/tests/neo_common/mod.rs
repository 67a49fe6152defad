//! Helpers of the NEO tests: opening a cluster's storage, Python writers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use testkit::neo::NeoCluster;
use zodb::storage::neo::{NeoOptions, NeoStorage};
use zodb::zurl::{self, ZUrl};

pub fn script() -> String {
    testkit::repo()
        .join("python/neo_oracle/neooracle.py")
        .to_string_lossy()
        .into_owned()
}

pub fn py(c: &NeoCluster) -> Command {
    let mut cmd = Command::new(c.python());
    c.python_env(&mut cmd);
    cmd.arg(script());
    cmd
}

pub fn open(c: &NeoCluster) -> NeoStorage {
    let z = c.zurl();
    let ZUrl::Neo {
        cluster, masters, ..
    } = zurl::parse(&z).unwrap()
    else {
        panic!("{z}: not a neo zurl")
    };
    NeoStorage::open_with(&cluster, masters, &z, NeoOptions::default()).unwrap()
}

/// Runs writers concurrently: each started, all told to go at once.
/// Returns the undos and deletions they made.
pub fn write(c: &NeoCluster, seeds: &[u64], ntxn: u32) -> (u32, u32) {
    let mut kids: Vec<_> = seeds
        .iter()
        .map(|s| {
            let mut k = py(c)
                .args(["write", &s.to_string(), &ntxn.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(k.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "ready", "writer {s} did not start");
            k
        })
        .collect();
    for k in &mut kids {
        writeln!(k.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let (mut undos, mut dels) = (0, 0);
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "writer failed: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        for w in text.split_whitespace() {
            if let Some(n) = w.strip_prefix("undos=") {
                undos += n.parse::<u32>().unwrap();
            }
            if let Some(n) = w.strip_prefix("deletes=") {
                dels += n.parse::<u32>().unwrap();
            }
        }
    }
    (undos, dels)
}
