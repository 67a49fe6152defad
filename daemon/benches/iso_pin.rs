//! Cost of the isolation protocol (harness = false), with the raw-line
//! test client of head/watch (daemon/tests/common/watch.rs):
//!
//! - pin round trip: for head reads that must pin one watcher, the time
//!   from the read's start to the pin's arrival at the client, and from the
//!   pin's arrival (acked at once) to the read's return — median and p99;
//! - watch setup that needs 1 000 pins (1 000 changed blocks, all read);
//! - extra latency of a head read that must pin 1 and 8 watchers, against
//!   a read of a block of another file that changed in the same commit but
//!   has no watcher (same run, interleaved).
//!
//! Until the daemon serves head/watch (ENOENT), it prints
//! "head/watch not available" and exits 0.
//!
//! Run: `cargo bench -p wcfsd --bench iso_pin` (root, /dev/fuse, Python).

#[path = "../tests/common/mod.rs"]
mod common;

use common::watch::{pread_random_fd, WatchLink};
use common::Env;
use std::fs::File;
use std::time::{Duration, Instant};
use zodb::Oid;

/// Blocks of the read-latency files, and their size.
const M: u64 = 256;
const BS: u64 = 16 << 10;
/// Blocks of the watch-setup file (4 KiB each).
const NSETUP: u64 = 1000;
const SETUP_REPS: usize = 5;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn show(name: &str, v: &mut [Duration]) {
    let (med, p99) = (pct(v, 0.5), pct(v, 0.99));
    println!(
        "{name:<48} median {:>12}  p99 {:>12}  (n={})",
        us(med),
        us(p99),
        v.len()
    );
}

fn read_all(f: &File, n: u64, bs: u64) {
    for b in 0..n {
        pread_random_fd(f, b, bs).expect("read head block");
    }
}

/// One round: `k` links watch `p` at head; one commit changes every block
/// of `p` and `q`; then blocks are read alternately from `q` (no pin) and
/// `p` (pins on every link). Returns (no-pin reads, pinning reads,
/// read start → pin arrival, pin arrival → read return) — the last two
/// from link 0.
#[allow(clippy::type_complexity)]
fn round(
    env: &mut Env,
    p: Oid,
    q: Oid,
    fp: &File,
    fq: &File,
    k: usize,
    seed: u64,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    let head = env.w().head();
    let links: Vec<WatchLink> = (0..k)
        .map(|_| WatchLink::open(&env.w().path("head/watch")).expect("open head/watch"))
        .collect();
    for l in &links {
        l.watch(p, head).expect("watch");
        l.take_pins();
    }
    env.py.insrange(p, 0, M, seed, 1.0);
    env.py.insrange(q, 0, M, seed + 1, 1.0);
    env.commit();
    let (mut nopin, mut pin, mut to_pin, mut from_pin) = (vec![], vec![], vec![], vec![]);
    for b in 0..M {
        let t0 = Instant::now();
        pread_random_fd(fq, b, BS).unwrap();
        nopin.push(t0.elapsed());

        let t0 = Instant::now();
        pread_random_fd(fp, b, BS).unwrap();
        let t1 = Instant::now();
        pin.push(t1 - t0);
        let pins = links[0].take_pins();
        assert_eq!(pins.len(), 1, "block {b}: want one pin, got {pins:?}");
        to_pin.push(pins[0].t.saturating_duration_since(t0));
        from_pin.push(t1.saturating_duration_since(pins[0].t));
        for l in &links[1..] {
            assert_eq!(l.take_pins().len(), 1);
        }
    }
    (nopin, pin, to_pin, from_pin)
}

fn main() {
    let mut env = Env::new();
    let w = env.py.new_file(4096);
    env.py.insrange(w, 0, NSETUP, 1, 1.0);
    let p = env.py.new_file(BS);
    env.py.insrange(p, 0, M, 2, 1.0);
    let q = env.py.new_file(BS);
    env.py.insrange(q, 0, M, 3, 1.0);
    let t0 = env.py.commit();
    env.mount(&[]);
    match WatchLink::open(&env.w().path("head/watch")) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            println!("head/watch not available");
            return;
        }
        Err(e) => panic!("open head/watch: {e}"),
    }

    // Watch setup with 1 000 pins.
    let fw = File::open(env.w().head_file(w)).unwrap();
    read_all(&fw, NSETUP, 4096);
    env.py.insrange(w, 0, NSETUP, 4, 1.0);
    env.commit();
    let mut setup = Vec::new();
    for _ in 0..SETUP_REPS {
        let l = WatchLink::open(&env.w().path("head/watch")).unwrap();
        let t = Instant::now();
        l.watch(w, t0).expect("watch");
        setup.push(t.elapsed());
        assert_eq!(l.take_pins().len(), NSETUP as usize, "pins of the setup");
    }
    let mut per_pin: Vec<Duration> = setup.iter().map(|d| *d / NSETUP as u32).collect();
    show("watch setup, 1000 pins", &mut setup);
    show("  per pin", &mut per_pin);

    // Reads that pin.
    let fp = File::open(env.w().head_file(p)).unwrap();
    let fq = File::open(env.w().head_file(q)).unwrap();
    read_all(&fp, M, BS);
    read_all(&fq, M, BS);
    let (mut n1, mut p1, mut to1, mut from1) = round(&mut env, p, q, &fp, &fq, 1, 10);
    let mut extra1: Vec<Duration> = p1
        .iter()
        .zip(&n1)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    show("head read, no pin (same run as 1 watcher)", &mut n1);
    show("head read pinning 1 watcher", &mut p1);
    show("  read start -> pin received", &mut to1);
    show(
        "  pin received -> read returns (ack round trip)",
        &mut from1,
    );
    show("  extra latency vs the no-pin read before it", &mut extra1);

    let (mut n8, mut p8, _, _) = round(&mut env, p, q, &fp, &fq, 8, 20);
    let mut extra8: Vec<Duration> = p8
        .iter()
        .zip(&n8)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    show("head read, no pin (same run as 8 watchers)", &mut n8);
    show("head read pinning 8 watchers", &mut p8);
    show("  extra latency vs the no-pin read before it", &mut extra8);
}
