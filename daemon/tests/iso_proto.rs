//! head/watch, message by message (SPEC §6): every reply and error path,
//! pins on watch setup, on moving a watch and on reads, stopping a watch,
//! malformed lines, `bye`, and a watch blocked waiting for head.

mod common;

use common::watch::{
    pin_keys, pread_random, stats, Line, Msg, PinMode, Rev, WatchLink, DEFAULT_TIMEOUT,
};
use common::Env;
use std::time::{Duration, Instant};
use zodb::{Oid, Tid};

const BS: u64 = 4096;
const NBLK: u64 = 4;

/// A file of NBLK blocks committed before the daemon starts, so that the
/// history starts at its commit (h0).
fn setup(args: &[&str]) -> (Env, Oid, Tid) {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", b as u8 + 1, BS as usize);
    }
    let h0 = env.py.commit();
    env.mount(args);
    assert_eq!(env.w().head(), h0);
    (env, f, h0)
}

fn link(env: &Env) -> WatchLink {
    WatchLink::open(&env.w().path("head/watch")).expect("open head/watch")
}

fn read_head(env: &Env, f: Oid, blk: u64) -> Vec<u8> {
    pread_random(&env.w().head_file(f), blk, BS).expect("read head block")
}

/// Reads every block through head/ (they become tracked).
fn read_all(env: &Env, f: Oid) {
    for b in 0..NBLK {
        read_head(env, f, b);
    }
}

fn change(env: &mut Env, f: Oid, blk: u64, byte: u8) -> Tid {
    env.py.fill(f, blk, "zblk0", byte, BS as usize);
    env.commit()
}

/// An `error` reply (not a link failure, not ok).
fn want_error(r: Result<(), String>, what: &str) {
    match r {
        Err(e) if !e.starts_with("link:") && !e.starts_with("unexpected") => {}
        other => panic!("{what}: want an error reply, got {other:?}"),
    }
}

fn pins_of(l: &WatchLink) -> Vec<(Oid, u64, Rev)> {
    pin_keys(&l.take_pins())
}

fn stat(env: &Env, name: &str) -> i64 {
    *stats(&env.w().mnt)
        .get(name)
        .unwrap_or_else(|| panic!(".wcfs/stats has no {name}"))
}

/// Polls a stats counter until it equals `want` (links are released
/// asynchronously after close).
fn wait_stat(env: &Env, name: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = stat(env, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stats {name}: {got}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_of_unopened_file_is_an_error() {
    let (env, f, h0) = setup(&[]);
    let l = link(&env);
    want_error(l.watch(f, h0), "file never opened under head/bigfile");
    // An oid that is no ZBigFile (the root object) was never opened either.
    want_error(l.watch(Oid(0), h0), "root object");
    // The link stays usable.
    let _fh = std::fs::File::open(env.w().head_file(f)).unwrap();
    l.watch(f, h0).expect("watch after open");
    assert!(l.fatal().is_empty() && l.protocol_errors().is_empty());
}

#[test]
fn watch_older_than_history_is_an_error() {
    let (env, f, h0) = setup(&[]);
    read_all(&env, f);
    let l = link(&env);
    want_error(l.watch(f, Tid(h0.0 - 1)), "at before the history start");
    want_error(l.watch(f, Tid(1)), "at 1");
    l.watch(f, h0).expect("at = history start");
    assert!(pins_of(&l).is_empty(), "nothing changed since h0");
}

#[test]
fn watch_going_back_is_an_error() {
    let (mut env, f, h0) = setup(&[]);
    read_all(&env, f);
    let t1 = change(&mut env, f, 0, 0xa1);
    let t2 = change(&mut env, f, 1, 0xa2);
    let l = link(&env);
    l.watch(f, t1).expect("watch @t1");
    assert_eq!(pins_of(&l), vec![(f, 1, Rev::At(h0))]);
    want_error(l.watch(f, h0), "going back");
    // Still usable, state unchanged: same at again pins nothing.
    l.watch(f, t1).expect("same at again");
    assert!(pins_of(&l).is_empty());
    l.watch(f, t2).expect("forward");
    assert_eq!(pins_of(&l), vec![(f, 1, Rev::Head)]);
    want_error(l.watch(f, t1), "going back after moving");
    assert!(l.fatal().is_empty() && l.protocol_errors().is_empty());
}

/// Pins on setup, on moving forward (pin and unpin), and on reads, with
/// the exact revisions (SPEC §6 + blkrev of §5).
#[test]
fn pins_on_setup_move_and_read() {
    let (mut env, f, h0) = setup(&[]);
    read_all(&env, f);
    let t1 = change(&mut env, f, 0, 0xb1);
    let t2 = change(&mut env, f, 1, 0xb2);
    let t3 = change(&mut env, f, 0, 0xb3);
    let l = link(&env);
    l.watch(f, h0).unwrap();
    assert_eq!(pins_of(&l), vec![(f, 0, Rev::At(h0)), (f, 1, Rev::At(h0))]);
    l.watch(f, t1).unwrap();
    assert_eq!(pins_of(&l), vec![(f, 0, Rev::At(t1))]);
    l.watch(f, t2).unwrap();
    assert_eq!(pins_of(&l), vec![(f, 1, Rev::Head)]);
    // Blocks read now at head, changed before: pinned already, no new pin.
    read_all(&env, f);
    assert!(pins_of(&l).is_empty());
    // A change after at: pinned before the read returns, once.
    let t4 = change(&mut env, f, 2, 0xb4);
    let data = read_head(&env, f, 2);
    assert_eq!(data, env.py.block(f, 2, None));
    assert_eq!(pins_of(&l), vec![(f, 2, Rev::At(h0))]);
    read_head(&env, f, 2);
    let t5 = change(&mut env, f, 2, 0xb5);
    read_head(&env, f, 2);
    assert!(
        pins_of(&l).is_empty(),
        "blkrev(2, t2) is still h0: no new pin"
    );
    // What the client sees through its pins equals Python's view at t2.
    for b in 0..NBLK {
        let got = match b {
            0 => env.w().read_block_at(t1, f, b, BS),
            2 => env.w().read_block_at(h0, f, b, BS),
            _ => read_head(&env, f, b),
        };
        assert_eq!(got, env.py.block(f, b, Some(t2)), "blk {b} as of t2");
    }
    // Move to head: every pin goes back to @head.
    l.watch(f, t5).unwrap();
    assert_eq!(pins_of(&l), vec![(f, 0, Rev::Head), (f, 2, Rev::Head)]);
    let _ = (t3, t4);
}

#[test]
fn stop_watching() {
    let (mut env, f, h0) = setup(&[]);
    read_all(&env, f);
    let l = link(&env);
    l.watch(f, h0).unwrap();
    wait_stat(&env, "WatchLink", 1);
    wait_stat(&env, "Watch", 1);
    change(&mut env, f, 0, 0xc1);
    read_head(&env, f, 0);
    assert_eq!(pins_of(&l), vec![(f, 0, Rev::At(h0))]);
    wait_stat(&env, "PinnedBlk", 1);
    l.unwatch(f).expect("watch -");
    wait_stat(&env, "Watch", 0);
    wait_stat(&env, "PinnedBlk", 0);
    change(&mut env, f, 1, 0xc2);
    read_head(&env, f, 1);
    assert!(pins_of(&l).is_empty(), "no pins after watch -");
    // Watching again starts afresh (the at may even be older now).
    l.watch(f, h0).expect("watch again");
    assert_eq!(pins_of(&l), vec![(f, 0, Rev::At(h0)), (f, 1, Rev::At(h0))]);
    drop(l);
    wait_stat(&env, "WatchLink", 0);
    wait_stat(&env, "Watch", 0);
    assert_eq!(stat(&env, "pinkill"), 0);
}

/// Lines that are not `<stream> <message>` at all, or that claim to answer
/// a pin the daemon never sent: `0 error …`, then the link is closed.
#[test]
fn malformed_lines_close_the_link() {
    let (env, f, h0) = setup(&[]);
    let _fh = std::fs::File::open(env.w().head_file(f)).unwrap();
    let even = format!("2 watch {f} @{h0}");
    for bad in [
        "hello",
        "zzz hello",
        " 1 watch",
        "-1 bye",
        "1",
        "\u{1}\u{2}",
        "2 ack",
        even.as_str(),
    ] {
        let l = link(&env);
        l.send_raw(bad).unwrap();
        assert!(
            l.wait_closed(Duration::from_secs(5)),
            "{bad:?}: link not closed; received {:?}",
            l.received()
        );
        let fatal = l.fatal();
        assert!(
            matches!(
                fatal.as_slice(),
                [Line {
                    stream: 0,
                    msg: Msg::Error(_)
                }]
            ),
            "{bad:?}: want one `0 error …` before close, got {:?} (all: {:?})",
            fatal,
            l.received()
        );
        assert!(l.protocol_errors().is_empty(), "{:?}", l.protocol_errors());
    }
    wait_stat(&env, "WatchLink", 0);
}

/// Well-framed requests on an odd stream that are not valid requests:
/// SPEC §6 does not say whether that is `<odd> error …` (link usable) or a
/// malformed line (`0 error …`, link closed); either is accepted, never
/// `ok` nor silence.
#[test]
fn bad_requests_error() {
    let (env, f, h0) = setup(&[]);
    let _fh = std::fs::File::open(env.w().head_file(f)).unwrap();
    for bad in [
        "frobnicate".to_string(),
        "watch".to_string(),
        format!("watch {f}"),
        format!("watch {f} {h0}"),
        format!("watch {f} @zzzz"),
        format!("watch 11 @{h0}"),
        format!("watch {f} @{h0} extra"),
        "ack".to_string(),
    ] {
        let l = link(&env);
        match l.request(&bad) {
            Ok(Line {
                msg: Msg::Error(_), ..
            }) => {
                l.watch(f, h0)
                    .unwrap_or_else(|e| panic!("{bad:?}: link not usable after error: {e}"));
            }
            Ok(other) => panic!("{bad:?}: got {other:?}"),
            Err(e) => {
                assert!(
                    l.wait_closed(Duration::from_secs(5))
                        && matches!(
                            l.fatal().as_slice(),
                            [Line {
                                stream: 0,
                                msg: Msg::Error(_)
                            }]
                        ),
                    "{bad:?}: neither `error` reply nor `0 error` + close: {e}; received {:?}",
                    l.received()
                );
            }
        }
    }
}

#[test]
fn bye_closes_the_link() {
    let (env, f, h0) = setup(&[]);
    read_all(&env, f);
    let l = link(&env);
    l.watch(f, h0).unwrap();
    l.bye().unwrap();
    assert!(
        l.wait_closed(Duration::from_secs(5)),
        "link not closed after bye; received {:?}",
        l.received()
    );
    wait_stat(&env, "WatchLink", 0);
    wait_stat(&env, "Watch", 0);
}

/// A watch with an `at` in the future waits for head (ok only once
/// head/at ≥ at); `bye` meanwhile closes the link without `ok`.
#[test]
fn watch_in_the_future() {
    let (mut env, f, h0) = setup(&[]);
    read_all(&env, f);

    // 1. It completes after the next commit.
    let l = link(&env);
    let future = Tid(h0.0 + 1);
    let s = l.new_stream();
    let rx = l.expect_reply(s);
    l.send_raw(&format!("{s} watch {f} @{future}")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        l.received().is_empty(),
        "reply before head reached at: {:?}",
        l.received()
    );
    env.py.fill(f, 3, "zblk0", 0xd3, BS as usize);
    let t1 = env.py.commit();
    let r = l
        .wait_reply(s, rx, DEFAULT_TIMEOUT)
        .expect("reply after commit");
    assert_eq!(r.msg, Msg::Ok, "{r:?}");
    assert!(env.w().head() >= t1);
    drop(l);

    // 2. bye while blocked.
    let l = link(&env);
    let future = Tid(env.w().head().0 + 1);
    let s = l.new_stream();
    let rx = l.expect_reply(s);
    l.send_raw(&format!("{s} watch {f} @{future}")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    l.bye().unwrap();
    assert!(
        l.wait_closed(Duration::from_secs(5)),
        "link not closed after bye with a blocked watch; received {:?}",
        l.received()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    if let Ok(r) = rx.try_recv() {
        assert_ne!(r.msg, Msg::Ok, "ok although head < at");
    }
    wait_stat(&env, "WatchLink", 0);
    wait_stat(&env, "Watch", 0);
    // The daemon still serves and commits still go through.
    let t2 = change(&mut env, f, 3, 0xd4);
    assert_eq!(env.w().head(), t2);
}

/// Several watches on one link (two files), and the stats that count them.
#[test]
fn two_files_one_link() {
    let (mut env, f, h0) = setup(&[]);
    let g = env.py.new_file(BS);
    env.py.fill(g, 0, "zblk1", 7, BS as usize);
    let t1 = env.commit();
    read_all(&env, f);
    read_head(&env, g, 0);
    let l = link(&env);
    l.watch(f, h0).unwrap();
    l.watch(g, t1).unwrap();
    wait_stat(&env, "Watch", 2);
    env.py.fill(f, 0, "zblk0", 0xe1, BS as usize);
    env.py.fill(g, 0, "zblk1", 0xe2, BS as usize);
    env.commit();
    read_head(&env, f, 0);
    read_head(&env, g, 0);
    let mut want = vec![(f, 0, Rev::At(h0)), (g, 0, Rev::At(t1))];
    want.sort();
    assert_eq!(pins_of(&l), want);
    wait_stat(&env, "PinnedBlk", 2);
    assert_eq!(stat(&env, "pin"), 2);
}

/// Requests on one link are handled concurrently: while a watch of one
/// file waits for the acks of its pins (or for head to reach its `at`),
/// a watch of another file on the same link is answered, and so is
/// `watch … -`.
#[test]
fn requests_on_one_link_are_concurrent() {
    let (mut env, f, h0) = setup(&[]);
    let g = env.py.new_file(BS);
    env.py.fill(g, 0, "zblk0", 9, BS as usize);
    env.py.fill(f, 1, "zblk0", 0xc1, BS as usize);
    let t1 = env.commit();
    read_all(&env, f);
    read_head(&env, g, 0);

    let l = WatchLink::open_with(&env.w().path("head/watch"), PinMode::Manual)
        .expect("open head/watch");
    // watch f @h0 needs a pin of f #1 (changed at t1); we hold its ack.
    let s = l.new_stream();
    let rx = l.expect_reply(s);
    l.send_raw(&format!("{s} watch {f} @{h0}")).unwrap();
    let pin = l.next_pin(DEFAULT_TIMEOUT).expect("pin for watch f @h0");
    assert_eq!((pin.oid, pin.blk, pin.rev), (f, 1, Rev::At(h0)));
    // Meanwhile the same link watches g (needs no pin) and stops again.
    let t0 = Instant::now();
    l.watch(g, t1)
        .expect("watch of another file while one waits for acks");
    l.unwatch(g).expect("unwatch while one waits for acks");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        rx.try_recv().is_err(),
        "watch f answered before its pin was acked"
    );
    // The ack completes the first watch.
    l.ack(pin.stream).unwrap();
    let r = l
        .wait_reply(s, rx, DEFAULT_TIMEOUT)
        .expect("reply after ack");
    assert_eq!(r.msg, Msg::Ok, "{r:?}");

    // Same while a watch waits for head to reach a future `at` (moving f
    // forward unpins #1: answer pins by ourselves again).
    l.set_mode(PinMode::Ack);
    let future = Tid(t1.0 + 1);
    let s = l.new_stream();
    let rx = l.expect_reply(s);
    l.send_raw(&format!("{s} watch {g} @{future}")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    l.watch(f, t1)
        .expect("watch of another file while one waits for head");
    assert!(rx.try_recv().is_err(), "answered before head reached at");
    env.py.fill(g, 0, "zblk0", 0xf1, BS as usize);
    env.py.commit();
    let r = l
        .wait_reply(s, rx, DEFAULT_TIMEOUT)
        .expect("reply after commit");
    assert_eq!(r.msg, Msg::Ok, "{r:?}");
}

/// Microseconds since the epoch of `tid` as Python's ZODB prints it
/// (`str(TimeStamp)`), the independent clock of the δt in errors.
fn py_micros(tid: Tid) -> i64 {
    const SCRIPT: &str = "python/fs_testdata/tid_time.py";
    let out = testkit::run_python(SCRIPT, &[tid.to_string()]);
    String::from_utf8(out).unwrap().trim().parse().unwrap()
}

/// Go's `time.Duration` text of a whole number of microseconds (SPEC §6:
/// `δt = <Go duration>`), from Go's documentation: `0s`, `123µs`,
/// `1.5ms`, `2.5s`, `2m0s`, `1h2m3.000004s`.
fn go_duration_us(us: i64) -> String {
    let (neg, us) = (us < 0, us.unsigned_abs());
    let trim = |int: u64, frac: u64, width: usize| {
        let f = format!("{frac:0width$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            int.to_string()
        } else {
            format!("{int}.{f}")
        }
    };
    let s = if us == 0 {
        "0s".to_string()
    } else if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{}ms", trim(us / 1000, us % 1000, 3))
    } else {
        let (secs, frac) = (us / 1_000_000, us % 1_000_000);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let s = format!("{}s", trim(s, frac, 6));
        match (h, secs / 60) {
            (0, 0) => s,
            (0, _) => format!("{m}m{s}"),
            _ => format!("{h}h{m}m{s}"),
        }
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Every error line the daemon can send on head/watch, exact, in
/// upstream's words (SPEC §6); each one answered at once — none times out.
#[test]
fn error_lines_are_upstreams() {
    let (mut env, f, h0) = setup(&[]);
    read_all(&env, f);
    // A ZBigFile never opened, and files with an epoch after h0: one
    // created, one whose blksize changes, one whose blktab is replaced.
    let never = env.py.new_file(BS);
    let resized = env.py.new_file(BS);
    let rebuilt = env.py.new_file(BS);
    for g in [never, resized, rebuilt] {
        env.py.fill(g, 0, "zblk0", 1, BS as usize);
    }
    let t_create = env.commit();
    let created = env.py.new_file(BS);
    env.py.fill(created, 0, "zblk0", 2, BS as usize);
    let t_created = env.commit();
    env.py.setblksize(resized, 2 * BS);
    let t_resized = env.commit();
    env.py.newblktab(rebuilt, 2, 7);
    let t_rebuilt = env.commit();
    let t1 = change(&mut env, f, 0, 0xe1);
    let head = env.w().head();
    for g in [created, resized, rebuilt] {
        read_head(&env, g, 0);
    }
    let root = Oid(0);
    let no_at = "ffffffffffffffff";
    let too_far = Tid(head.0 - (2 << 32)); // two minutes before head
    let dt = go_duration_us(py_micros(head) - py_micros(too_far));

    let l = link(&env);
    l.watch(f, t1).unwrap();
    let replies: Vec<(String, String)> = vec![
        (
            format!("watch {never} @{h0}"),
            format!("error setup watch f<{never}> @{h0}: file not yet known to wcfs or is not a ZBigFile"),
        ),
        (
            format!("watch {root} @{h0}"),
            format!("error setup watch f<{root}> @{h0}: file not yet known to wcfs or is not a ZBigFile"),
        ),
        (
            format!("watch {never} -"),
            format!("error setup watch f<{never}> @{no_at}: file not yet known to wcfs or is not a ZBigFile"),
        ),
        (format!("watch {created} -"), "ok".to_string()),
        (
            format!("watch {f} @{h0}"),
            format!("error setup watch f<{f}> @{h0}: going back in history is forbidden"),
        ),
        (
            format!("watch {f} @{too_far}"),
            format!("error setup watch f<{f}> @{too_far}: too far away back from head/at (@{head}); δt = {dt}"),
        ),
        (
            format!("watch {created} @{h0}"),
            format!("error setup watch f<{created}> @{h0}: file epoch detected @{t_created} in between (at,head=@{head}]"),
        ),
        (
            format!("watch {resized} @{t_create}"),
            format!("error setup watch f<{resized}> @{t_create}: file epoch detected @{t_resized} in between (at,head=@{head}]"),
        ),
        (
            format!("watch {rebuilt} @{t_resized}"),
            format!("error setup watch f<{rebuilt}> @{t_resized}: file epoch detected @{t_rebuilt} in between (at,head=@{head}]"),
        ),
        // At or after the epoch is fine.
        (format!("watch {rebuilt} @{t_rebuilt}"), "ok".to_string()),
        (
            "bla bla".to_string(),
            r#"error bad watch: not a watch request: "bla bla""#.to_string(),
        ),
        (
            "watch".to_string(),
            r#"error bad watch: not a watch request: "watch""#.to_string(),
        ),
        (
            "bye now".to_string(),
            r#"error bad watch: not a watch request: "bye now""#.to_string(),
        ),
        (
            "ack".to_string(),
            r#"error bad watch: not a watch request: "ack""#.to_string(),
        ),
        (
            format!("watch {f}"),
            "error bad watch: expected 2 arguments, got 1".to_string(),
        ),
        (
            format!("watch {f} @{h0} x"),
            "error bad watch: expected 2 arguments, got 3".to_string(),
        ),
        (
            format!("watch 11 @{h0}"),
            "error bad watch: invalid oid".to_string(),
        ),
        (
            format!("watch {f} {h0}"),
            "error bad watch: invalid at".to_string(),
        ),
        (
            format!("watch {f} @zz"),
            "error bad watch: invalid at".to_string(),
        ),
    ];
    for (req, want) in replies {
        let s = l.new_stream();
        let rx = l.expect_reply(s);
        l.send_raw(&format!("{s} {req}")).unwrap();
        let got = l
            .wait_reply(s, rx, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{req:?}: {e}"));
        let raw = l
            .received()
            .into_iter()
            .rev()
            .find(|x| x.starts_with(&format!("{s} ")))
            .unwrap();
        assert_eq!(raw, format!("{s} {want}"), "{req:?} ({got:?})");
    }
    assert!(l.fatal().is_empty() && l.protocol_errors().is_empty());

    // Lines that are no frame, replies nobody waits for: `0 error: …`
    // and the link is closed.
    for (bad, want) in [
        (
            "zzz hello",
            r#"0 error: invalid frame: "zzz hello\n" (invalid stream)"#,
        ),
        ("hello", r#"0 error: invalid frame: "hello\n""#),
        (
            "-1 bye",
            r#"0 error: invalid frame: "-1 bye\n" (invalid stream)"#,
        ),
        ("2 ack", "0 error: 2: reply on unexpected stream"),
        ("0 ack", "0 error: 0: reply on unexpected stream"),
    ] {
        let l = link(&env);
        l.send_raw(bad).unwrap();
        assert!(l.wait_closed(Duration::from_secs(5)), "{bad:?}: not closed");
        assert_eq!(l.received(), vec![want.to_string()], "{bad:?}");
    }
}
