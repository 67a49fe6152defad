//! Unit tests of the head/watch test client's line parser and of the pin
//! model (daemon/tests/common/watch.rs). No daemon needed: these run today.

mod common;

use common::watch::{parse_line, parse_stats, Line, Msg, PinModel, Rev};
use std::collections::{BTreeMap, HashMap};
use zodb::{Oid, Tid};

const F: Oid = Oid(0x11);

fn l(stream: u64, msg: Msg) -> Result<Line, String> {
    Ok(Line { stream, msg })
}

#[test]
fn parse_daemon_lines() {
    assert_eq!(parse_line("1 ok\n"), l(1, Msg::Ok));
    assert_eq!(parse_line("3 ok"), l(3, Msg::Ok));
    assert_eq!(
        parse_line("5 error file not opened: 0000000000000011\n"),
        l(5, Msg::Error("file not opened: 0000000000000011".into()))
    );
    assert_eq!(
        parse_line("0 error: invalid frame \"zzz\""),
        l(0, Msg::Error("invalid frame \"zzz\"".into()))
    );
    assert_eq!(
        parse_line("0 fatal: lost database"),
        l(0, Msg::Fatal("lost database".into()))
    );
    assert_eq!(
        parse_line("2 pin 0000000000000011 #7 @0285cbac3851eb99\n"),
        l(
            2,
            Msg::Pin {
                oid: F,
                blk: 7,
                rev: Rev::At(Tid(0x0285cbac3851eb99))
            }
        )
    );
    assert_eq!(
        parse_line("18446744073709551614 pin 0000000000000011 #0 @head"),
        l(
            u64::MAX - 1,
            Msg::Pin {
                oid: F,
                blk: 0,
                rev: Rev::Head
            }
        )
    );
    assert_eq!(parse_line("4 ack"), l(4, Msg::Ack));
    assert_eq!(parse_line("7 bye"), l(7, Msg::Bye));
    assert_eq!(
        parse_line("9 watch 0000000000000011 @0000000000000001"),
        l(
            9,
            Msg::Watch {
                oid: F,
                at: Some(Tid(1))
            }
        )
    );
    assert_eq!(
        parse_line("9 watch 0000000000000011 -"),
        l(9, Msg::Watch { oid: F, at: None })
    );
    assert_eq!(
        parse_line("1 frob nicate"),
        l(1, Msg::Other("frob nicate".into()))
    );
}

#[test]
fn parse_rejects_malformed() {
    for bad in [
        "",
        "\n",
        "ok",
        "x ok",
        "-1 ok",
        "+1 ok",
        " 1 ok",
        "1 ok\n2 ok",
        "99999999999999999999999 ok",
        "2 pin",
        "2 pin 0000000000000011 #7",
        "2 pin 0000000000000011 7 @head",
        "2 pin 0000000000000011 # @head",
        "2 pin 0000000000000011 #-1 @head",
        "2 pin 11 #7 @head",
        "2 pin 0000000000000011 #7 0285cbac3851eb99",
        "2 pin 0000000000000011 #7 @0285CBAC3851EB9",
        "2 pin 0000000000000011 #7 @head extra",
        "1 watch 0000000000000011",
        "1 watch 0000000000000011 @zz",
    ] {
        assert!(
            parse_line(bad).is_err(),
            "{bad:?} parsed: {:?}",
            parse_line(bad)
        );
    }
}

#[test]
fn parse_stats_lines() {
    let s = parse_stats("BigFile\t: 2\nRevHead\t: 0\nWatchLink\t: 3\npinkill\t: 1\njunk\n");
    assert_eq!(s["BigFile"], 2);
    assert_eq!(s["WatchLink"], 3);
    assert_eq!(s["pinkill"], 1);
    assert!(!s.contains_key("junk"));
}

fn ids(v: &[(u64, &str)]) -> HashMap<Oid, BTreeMap<u64, String>> {
    let m = v.iter().map(|(b, s)| (*b, s.to_string())).collect();
    HashMap::from([(F, m)])
}

/// The model on a hand-computed history (SPEC §5, §6).
#[test]
fn model_by_hand() {
    let (h0, t1, t2, t3) = (Tid(100), Tid(110), Tid(120), Tid(130));
    let mut m = PinModel::new(h0, ids(&[(0, "a"), (1, "b"), (2, "c")]));
    assert_eq!(
        m.watch(0, F, h0),
        Err(format!(
            "setup watch f<{F}> @{h0}: file not yet known to wcfs or is not a ZBigFile"
        ))
    );
    m.open(F);
    assert!(m.watch(0, F, Tid(99)).is_err(), "older than history");
    for b in 0..3 {
        assert!(m.read(F, b).is_empty());
    }
    // t1: blk 0; t2: blk 1 (and blk 3 appears: never read); t3: blk 0 again.
    m.commit(t1, ids(&[(0, "a1"), (1, "b"), (2, "c")]));
    m.commit(t2, ids(&[(0, "a1"), (1, "b1"), (2, "c"), (3, "d")]));
    // A commit that leaves the identities alone changes nothing.
    m.commit(Tid(125), ids(&[(0, "a1"), (1, "b1"), (2, "c"), (3, "d")]));
    m.commit(t3, ids(&[(0, "a2"), (1, "b1"), (2, "c"), (3, "d")]));
    assert_eq!(m.blkrev(F, 0, h0), h0);
    assert_eq!(m.blkrev(F, 0, Tid(115)), t1);
    assert_eq!(m.blkrev(F, 2, t3), h0);

    let p = |b, r| (F, b, r);
    // Setup at h0: read blocks changed in (h0, t3] pinned to their state at h0;
    // blk 3 changed too but was never read.
    assert_eq!(
        m.watch(0, F, h0),
        Ok(vec![p(0, Rev::At(h0)), p(1, Rev::At(h0))])
    );
    // Same at again: nothing.
    assert_eq!(m.watch(0, F, h0), Ok(vec![]));
    // Forward to t1: blk 0 now as of t1; blk 1 unchanged (blkrev still h0).
    assert_eq!(m.watch(0, F, t1), Ok(vec![p(0, Rev::At(t1))]));
    // Back: error, state kept.
    assert!(m.watch(0, F, h0).is_err());
    assert_eq!(m.source(0, F, 0), Some(t1));
    // Forward to t2: blk 1 no longer needs its pin.
    assert_eq!(m.watch(0, F, t2), Ok(vec![p(1, Rev::Head)]));
    // A second link at t2: blk 0 only.
    assert_eq!(m.watch(1, F, t2), Ok(vec![p(0, Rev::At(t1))]));
    // Reading blk 3 (changed at t2, after neither at): no pins; reading
    // blk 0 (already pinned everywhere): no pins.
    assert!(m.read(F, 3).is_empty());
    assert!(m.read(F, 0).is_empty());
    // t4 changes blk 2 and blk 3; a read pins them on both watches, once.
    let t4 = Tid(140);
    m.commit(t4, ids(&[(0, "a2"), (1, "b1"), (2, "c1"), (3, "d1")]));
    let r = m.read(F, 2);
    assert_eq!(r.len(), 2);
    assert_eq!(r[&0], vec![p(2, Rev::At(h0))]);
    assert_eq!(r[&1], vec![p(2, Rev::At(h0))]);
    assert!(m.read(F, 2).is_empty(), "pinned once");
    let r = m.read(F, 3);
    assert_eq!(r[&0], vec![p(3, Rev::At(t2))]);
    // A hole is content too: blk 1 punched at t5.
    let t5 = Tid(150);
    m.commit(t5, ids(&[(0, "a2"), (2, "c1"), (3, "d1")]));
    assert!(m.changed_in(F, 1, t4, t5));
    // Unwatch drops the state; watching again starts from nothing.
    m.unwatch(1, F);
    assert_eq!(
        m.watch(1, F, t4),
        Ok(vec![p(1, Rev::At(t2))]),
        "blk 1: last change ≤ t4 is t2"
    );
    // Forward to head: every pin goes.
    assert_eq!(
        m.watch(0, F, t5),
        Ok(vec![p(0, Rev::Head), p(2, Rev::Head), p(3, Rev::Head)])
    );
    assert_eq!(m.npinned(), 1);
}

/// The model on Python's real data (no daemon): block identities from
/// python/fs_testdata/iso_blkid.py are sound — a block the model says did
/// not change in (blkrev(blk, at), at] has the same data at both — and a
/// block whose data changed is seen as changed.
#[test]
fn model_agrees_with_python_data() {
    use common::watch::BlkIds;
    use common::Env;
    let mut rng = testkit::Rng::new(testkit::seed("model_agrees_with_python_data"));
    const BS: u64 = 1024;
    const N: u64 = 6;
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for b in 0..N {
        env.py.fill(f, b, "zblk0", b as u8 + 1, BS as usize);
    }
    let h0 = env.commit();
    let mut ids = BlkIds::start(&env.datafs);
    let mut m = PinModel::new(h0, ids.get(&[f], h0));
    let mut tids = vec![h0];
    for _ in 0..6 {
        for _ in 0..2 {
            let blk = rng.below(N - 1);
            match rng.below(4) {
                0 => env.py.punch(f, blk),
                1 => env.py.link(f, rng.below(N), blk, false),
                2 => env
                    .py
                    .patch(f, blk, rng.below(BS - 8), &[9; 8], "zblk1", Some(256)),
                _ => env
                    .py
                    .fill(f, blk, "zblk0", rng.below(256) as u8, BS as usize),
            }
        }
        let t = env.commit();
        let prev = *tids.last().unwrap();
        if t == prev {
            continue; // nothing changed (a hole punched or linked again): no transaction
        }
        let changed = m.commit(t, ids.get(&[f], t));
        for blk in 0..N {
            let (a, b) = (
                env.py.block(f, blk, Some(prev)),
                env.py.block(f, blk, Some(t)),
            );
            let ch = changed.get(&f).is_some_and(|s| s.contains(&blk));
            assert!(
                ch || a == b,
                "blk {blk}: data changed at {t}, model says not"
            );
        }
        tids.push(t);
    }
    for &at in &tids {
        for blk in 0..N {
            let r = m.blkrev(f, blk, at);
            assert!(r <= at && r >= h0);
            assert_eq!(
                env.py.block(f, blk, Some(r)),
                env.py.block(f, blk, Some(at)),
                "blk {blk}: data at blkrev {r} != at {at}"
            );
        }
    }
}
