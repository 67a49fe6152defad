//! `neos://`: a NEO cluster whose nodes run with TLS (a CA, a certificate
//! and a key made here with `openssl`), read by our client with its own
//! certificate — every object at every tid as Python's TLS client reads
//! it; a client trusting another CA is refused with a clear error, as is
//! a plain `neo://` client.
//!
//! The nodes are started here (`neomaster`, `neostorage` of the NEO venv
//! with `--ca/--cert/--key`; the cluster script does not do TLS). Without
//! the NEO venv's cluster script this test skips (fails under CI=true).

#[allow(dead_code)]
mod neo_common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::neo::NeoCluster;
use zodb::storage::Error;
use zodb::{Oid, Tid};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `NAME-ca.pem`, and `NAME.pem`/`NAME.key` signed by it (valid for
/// 127.0.0.1, server and client), all strict X.509 as Python's ssl wants.
fn pki(dir: &Path, name: &str) {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=x\n\
         [ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\n\
         [leaf]\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let ext = ext.to_str().unwrap();
    let (ca, cak) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let (crt, key, csr) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &cak,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} CA"),
            "-config",
            ext,
            "-extensions",
            "ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name} node"),
            "-config",
            ext,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &cak,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            ext,
            "-extensions",
            "leaf",
        ],
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn tls_cluster_read_and_wrong_ca_refused() {
    if !NeoCluster::available("neo_tls") {
        return;
    }
    let venv = testkit::neo::venv();
    if !venv.join("bin/neomaster").exists() {
        // The venv is built by the cluster script: one cluster does it.
        drop(NeoCluster::start(1, 1, 0));
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d, "good");
    pki(d, "other");
    let p = |f: &str| d.join(f).to_str().unwrap().to_string();
    let tls = [
        "--ca".to_string(),
        p("good-ca.pem"),
        "--cert".into(),
        p("good.pem"),
        "--key".into(),
        p("good.key"),
    ];
    let name = format!("neotls-{}", std::process::id());
    let (mport, sport) = (free_port(), free_port());
    let master = format!("127.0.0.1:{mport}");
    let spawn = |bin: &str, args: Vec<String>| {
        Command::new(venv.join("bin").join(bin))
            .args(args)
            .args(&tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let nodes = Nodes(vec![
        spawn(
            "neomaster",
            [
                "-c",
                &name,
                "-m",
                &master,
                "-b",
                &master,
                "-r",
                "0",
                "-p",
                "4",
                "-A",
                "1",
                "-l",
                &p("master.log"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        spawn(
            "neostorage",
            [
                "-c",
                &name,
                "-m",
                &master,
                "-b",
                &format!("127.0.0.1:{sport}"),
                "-a",
                "SQLite",
                "-d",
                &p("s.sqlite"),
                "-l",
                &p("storage.log"),
            ]
            .map(String::from)
            .to_vec(),
        ),
    ]);
    // Python's TLS client commits (retrying until the cluster runs).
    let py = |args: &[&str]| {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.env("NEO_MASTERS", &master)
            .env("NEO_NAME", &name)
            .env("NEO_CA", p("good-ca.pem"))
            .env("NEO_CERT", p("good.pem"))
            .env("NEO_KEY", p("good.key"))
            .arg(neo_common::script())
            .args(args);
        cmd
    };
    let t0 = Instant::now();
    loop {
        let mut k = py(&["write", "5", "8"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = writeln!(k.stdin.as_mut().unwrap(), "go");
        if k.wait().unwrap().success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the TLS cluster did not come up; master log: {}",
            p("master.log")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = d.join("oracle.txt");
    assert!(py(&["dump", out.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let text = std::fs::read_to_string(&out).unwrap();

    let q = |ca: &str| {
        format!(
            "neos://{name}@{master}?ca={}&cert={}&key={}",
            p(ca),
            p("good.pem"),
            p("good.key")
        )
    };
    let st = zodb::zurl::open(&q("good-ca.pem")).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] != "load" {
            continue;
        }
        let oid = Oid(u64::from_str_radix(f[1], 16).unwrap());
        let tid = Tid(u64::from_str_radix(f[2], 16).unwrap());
        let got = match st.load(oid, tid) {
            Ok(l) => format!(
                "{:016x} {} {}",
                l.serial.0,
                l.data.len(),
                testkit::sha1_hex(&l.data)
            ),
            Err(Error::NotYetCreated { .. }) => "none".into(),
            Err(e) if e.is_missing() => "nokey".into(),
            Err(e) => panic!("load {oid}@{tid}: {e}"),
        };
        assert_eq!(got, f[3..].join(" "), "load {oid}@{tid}");
        n += 1;
    }
    assert!(n > 20, "only {n} loads");

    // Another CA: the node's certificate is not trusted.
    let e = zodb::zurl::open(&q("other-ca.pem"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("TLS handshake") && e.contains("UnknownIssuer"),
        "{e}"
    );
    // Plain NEO to a TLS node: refused.
    let e = zodb::zurl::open(&format!("neo://{name}@{master}"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("handshake"), "{e}");
    drop(st);
    drop(nodes);
}
