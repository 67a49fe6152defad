//! ZEO over TLS (`zeos://`) against a real `runzeo` with an `<ssl>`
//! section and client authentication, with certificates made at test time
//! (`testkit::certs`) and Python's ZODB as the oracle:
//!
//! - every load, pipelined loads, watching, and the commits of a Python
//!   ZEO client (itself over TLS) match what Python reads;
//! - `kill -9` and restart of the server, with commits made meanwhile
//!   (straight to its data.fs): caught up exactly, once each, in order;
//! - what a user gets wrong is refused with a message naming the cause
//!   (and the file), never showing key material: a CA that did not sign
//!   the server's certificate, no client certificate, one the server does
//!   not trust, a wrong host name, an expired server certificate, plain
//!   `zeo://` to the TLS server (at once, not after the connect timeout),
//!   `zeos://` to a plain server.

mod fs_dump;

use fs_dump::{dump, expect_of, oracle, script, sorted, writer_log, Expect};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::certs::Pki;
use testkit::{python, ZeoServer};
use zodb::storage::{counter, Commit, Error, Resilience, Storage};
use zodb::{Oid, Tid};

fn pki(dir: &Path) -> Pki {
    Pki::make(&dir.join("pki"), "wcfs")
}

fn open(zurl: &str, srv: &ZeoServer) -> std::sync::Arc<dyn Storage> {
    zodb::zurl::open(zurl)
        .unwrap_or_else(|e| panic!("open {zurl}: {e}\nserver log:\n{}", srv.log_text()))
}

/// The error opening `zurl`, as text.
fn refused(zurl: &str) -> String {
    match zodb::zurl::open(zurl) {
        Ok(_) => panic!("{zurl}: opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn oracle_over_zeos() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--big", "--seed", "11", "--txns", "60"]);
    let o = dump(tmp.path());
    let pki = pki(tmp.path());
    let srv = ZeoServer::start_tls(&tmp.path().join("data.fs"), &pki, &pki.server, None);
    let zurl = srv.zurl();
    assert!(zurl.starts_with("zeos://127.0.0.1:"), "{zurl}");
    let zs = open(&zurl, &srv);
    assert_eq!(zs.last_tid().unwrap(), o.last);

    for (oid, at, want) in &o.loads {
        let got = expect_of(zs.load(*oid, *at)).unwrap_or_else(|e| panic!("load {oid}@{at}: {e}"));
        assert_eq!(&got, want, "load {oid}@{at}");
    }
    // Many threads on the one TLS session.
    std::thread::scope(|s| {
        for k in 0..4 {
            let (zs, o) = (&zs, &o);
            s.spawn(move || {
                for (oid, at, want) in o.loads.iter().skip(k).step_by(2) {
                    let got = expect_of(zs.load(*oid, *at)).unwrap();
                    assert_eq!(&got, want, "thread {k}: load {oid}@{at}");
                }
            });
        }
    });
    for after in [Tid::ZERO, Tid(o.txns[o.txns.len() / 2].tid.0 - 1)] {
        let mut w = zs.watch(after).unwrap();
        let mut got = vec![];
        while let Some(c) = w.next_timeout(Duration::ZERO).unwrap() {
            got.push(c);
        }
        let want: Vec<Commit> = o.txns.iter().filter(|c| c.tid > after).cloned().collect();
        assert_eq!(got, want, "watch({after})");
    }

    // A Python ZEO client commits over TLS too; the watcher sees each.
    const N: usize = 30;
    let start = zs.last_tid().unwrap();
    let mut w = zs.watch(start).unwrap();
    let out = tmp.path().join("writer.txt");
    let st = Command::new(python())
        .arg(script())
        .args(["writer", d, &N.to_string(), out.to_str().unwrap()])
        .args(["--zurl", &zurl])
        .status()
        .unwrap();
    assert!(st.success(), "python writer failed");
    let want: Vec<Commit> = writer_log(&out).iter().map(sorted).collect();
    assert_eq!(want.len(), N);
    let mut got = vec![];
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < N && Instant::now() < deadline {
        if let Some(c) = w.next_timeout(Duration::from_millis(500)).unwrap() {
            for oid in &c.oids {
                assert_eq!(zs.load(*oid, c.tid).unwrap().serial, c.tid);
            }
            got.push(sorted(&c));
        }
    }
    assert_eq!(got, want, "watcher differs from what Python committed");
    assert!(w
        .next_timeout(Duration::from_millis(200))
        .unwrap()
        .is_none());
}

/// kill -9 of the TLS server, commits straight to its data.fs meanwhile,
/// restart: the storage reconnects over TLS, catches up exactly those
/// commits (once each, in order) and serves exactly again.
#[test]
fn killed_and_restarted_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--txns", "10"]);
    let pki = pki(tmp.path());
    let mut srv = ZeoServer::start_tls(&tmp.path().join("data.fs"), &pki, &pki.server, None);
    let resilience = Resilience {
        wait: Duration::from_millis(700),
        backoff_max: Duration::from_millis(200),
    };
    let zs = zodb::zurl::open_with(&srv.zurl(), &resilience).unwrap();
    let head = zs.last_tid().unwrap();
    let mut w = zs.watch(head).unwrap();
    let counter_of = |name: &str| zs.counters().into_iter().find(|c| c.0 == name).unwrap().1;

    for round in 1..=3u64 {
        srv.kill();
        let t0 = Instant::now();
        while counter_of(counter::LOST) < round {
            assert!(t0.elapsed() < Duration::from_secs(10), "loss noticed late");
            std::thread::sleep(Duration::from_millis(10));
        }
        // While it is down: loads give up after the wait, the head stays.
        let e = zs.load(Oid(0), Tid::MAX).unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        let before = zs.last_tid().unwrap();
        let out = tmp.path().join(format!("direct{round}.txt"));
        let st = Command::new(python())
            .arg(script())
            .args(["writer", d, "3", out.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(zs.last_tid().unwrap(), before, "head moved while away");
        srv.restart(None);
        let want: Vec<Commit> = writer_log(&out).iter().map(sorted).collect();
        let mut got = vec![];
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < want.len() && Instant::now() < deadline {
            if let Some(c) = w.next_timeout(Duration::from_millis(200)).unwrap() {
                got.push(sorted(&c));
            }
        }
        assert_eq!(got, want, "round {round}: caught up");
        assert_eq!(counter_of(counter::RECONNECT), round);
        assert_eq!(counter_of(counter::CATCHUP), 3 * round);
    }
    // Everything Python reads, we read.
    let o = dump(tmp.path());
    assert_eq!(zs.last_tid().unwrap(), o.last);
    for (oid, at, want) in &o.loads {
        let got = expect_of(zs.load(*oid, *at)).unwrap_or_else(|e| panic!("load {oid}@{at}: {e}"));
        assert_eq!(&got, want, "load {oid}@{at}");
    }
    assert!(w
        .next_timeout(Duration::from_millis(200))
        .unwrap()
        .is_none());
    assert!(o.loads.iter().any(|l| matches!(l.2, Expect::Data { .. })));
}

/// What a user gets wrong: refused, naming the cause and the file.
#[test]
fn refusals_name_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--txns", "3"]);
    let pki = pki(tmp.path());
    let srv = ZeoServer::start_tls(&tmp.path().join("data.fs"), &pki, &pki.server, None);
    let key_pem = std::fs::read_to_string(&pki.client.key).unwrap();
    let secret = key_pem.lines().nth(1).unwrap().to_string();
    let check = |zurl: &str, want: &[&str]| {
        let e = refused(zurl);
        for w in want {
            assert!(e.contains(w), "{zurl}: want {w:?} in: {e}");
        }
        assert!(!e.contains(&secret) && !e.contains("PRIVATE KEY"), "{e}");
        eprintln!("{e}");
    };
    // The right setup works (the control).
    let _ = open(&srv.zurl(), &srv);

    // Another CA: the server's certificate is not trusted.
    let foreign = pki.foreign_ca.display().to_string();
    check(
        &srv.zurl_tls(&pki.foreign_ca, Some(&pki.client), None),
        &["not signed by the CA", &foreign, "UnknownIssuer"],
    );
    // No client certificate: runzeo authenticates clients.
    check(
        &srv.zurl_tls(&pki.ca, None, None),
        &["requires a client certificate"],
    );
    // A client certificate of another CA.
    let fcert = pki.foreign.cert.display().to_string();
    check(
        &srv.zurl_tls(&pki.ca, Some(&pki.foreign), None),
        &["refused our client certificate", &fcert],
    );
    // A name the server's certificate is not for.
    check(
        &srv.zurl_tls(&pki.ca, Some(&pki.client), Some("other.example")),
        &["not valid for the host name", "other.example"],
    );
    // ... and the name it is for.
    let _ = open(
        &srv.zurl_tls(&pki.ca, Some(&pki.client), Some("localhost")),
        &srv,
    );
    // The key in another file than given: a clear error naming the file.
    let z = format!(
        "zeos://127.0.0.1:{}?ca={}&cert={}&key={}",
        srv.port,
        pki.ca.display(),
        pki.client.cert.display(),
        pki.client.cert.display()
    );
    check(&z, &["key ", &pki.client.cert.display().to_string()]);
    // Plain zeo:// to the TLS server: says so, well before the connect
    // timeout (10 s).
    let t0 = Instant::now();
    check(
        &format!("zeo://127.0.0.1:{}", srv.port),
        &["speaks TLS", "zeos://"],
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());

    // zeos:// to a plain server.
    let tmp2 = tempfile::tempdir().unwrap();
    oracle(&["gen", tmp2.path().to_str().unwrap(), "--txns", "2"]);
    let plain = ZeoServer::start(&tmp2.path().join("data.fs"));
    check(
        &format!(
            "zeos://127.0.0.1:{}?ca={}&cert={}&key={}",
            plain.port,
            pki.ca.display(),
            pki.client.cert.display(),
            pki.client.key.display()
        ),
        &["does not speak TLS"],
    );
    // And plain zeo:// to it still works, at once.
    let t0 = Instant::now();
    let _ = open(&plain.zurl(), &plain);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Server certificates a client must refuse: expired, for another host.
#[test]
fn bad_server_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--txns", "2"]);
    let pki = pki(tmp.path());
    let datafs = tmp.path().join("data.fs");
    {
        let srv = ZeoServer::start_tls(&datafs, &pki, &pki.expired, None);
        let e = refused(&srv.zurl());
        assert!(e.contains("has expired"), "{e}");
    }
    {
        let srv = ZeoServer::start_tls(&datafs, &pki, &pki.other_host, None);
        let e = refused(&srv.zurl());
        assert!(
            e.contains("not valid for the host name \"127.0.0.1\""),
            "{e}"
        );
        // Told the name it is for: served.
        let z = srv.zurl_tls(&pki.ca, Some(&pki.client), Some("other.example"));
        let zs = open(&z, &srv);
        assert!(zs.last_tid().unwrap() > Tid::ZERO);
    }
}

/// A TLS server on a Unix socket, named storage: `zeos:///SOCKET?…`.
#[test]
fn unix_socket_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    oracle(&["gen", d, "--txns", "5"]);
    let o = dump(tmp.path());
    let pki = pki(tmp.path());
    let sock = tmp.path().join("zeo.sock");
    let srv = ZeoServer::start_tls(&tmp.path().join("data.fs"), &pki, &pki.server, Some(&sock));
    let zurl = srv.zurl();
    assert!(zurl.contains("server_hostname=localhost"), "{zurl}");
    let zs = open(&zurl, &srv);
    assert_eq!(zs.last_tid().unwrap(), o.last);
    for (oid, at, want) in o.loads.iter().take(50) {
        assert_eq!(&expect_of(zs.load(*oid, *at)).unwrap(), want);
    }
    // The storage named explicitly ("1").
    let zs = open(&format!("{zurl}&storage=1"), &srv);
    assert_eq!(zs.last_tid().unwrap(), o.last);
}
