//! Helpers of the storage-outage tests (zeo_restart, pg_restart): the
//! daemon's counters, the stream of heads it reports, and reader threads
//! that read cold blocks of head/ all through an outage and check every
//! page against the values the test has committed.

use super::Env;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zodb::Tid;

/// Counter `name` of the mount's `.wcfs/stats`.
pub fn stat(env: &Env, name: &str) -> i64 {
    let text = std::fs::read_to_string(env.w().path(".wcfs/stats")).unwrap();
    super::watch::parse_stats(&text)
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("no {name} in .wcfs/stats:\n{text}"))
}

/// Waits until counter `name` reaches `want`; how long that took.
pub fn wait_stat(env: &Env, name: &str, want: i64, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    while stat(env, name) < want {
        assert!(
            t0.elapsed() < timeout,
            "{name} stuck at {} (want {want}); log:\n{}",
            stat(env, name),
            env.w().log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

/// Block `blk` (of `bs` bytes) of the file at `path` read cold: dropped from
/// the kernel's cache first, so that the read reaches the daemon (its block
/// cache, or the server).
pub fn read_cold(path: &Path, blk: u64, bs: u64) -> std::io::Result<Vec<u8>> {
    let fd = std::fs::File::open(path)?;
    // SAFETY: plain syscall on a descriptor we own.
    unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    super::read_block_of(&fd, blk, bs)
}

/// The `.wcfs/debug/zhead` stream of the mount, collected by a thread.
pub struct ZHead {
    tids: Arc<Mutex<Vec<Tid>>>,
}

impl ZHead {
    pub fn open(env: &Env) -> ZHead {
        let f = std::fs::File::open(env.w().path(".wcfs/debug/zhead")).unwrap();
        let tids = Arc::new(Mutex::new(Vec::new()));
        let t = tids.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                t.lock()
                    .unwrap()
                    .push(line.trim().parse().expect("zhead: a tid"));
            }
        });
        ZHead { tids }
    }

    /// The heads reported so far.
    pub fn get(&self) -> Vec<Tid> {
        self.tids.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until `tid` is the last head reported.
    pub fn wait_last(&self, tid: Tid) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get().last() != Some(&tid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Threads reading blocks of a file cold, in turn, until stopped. Every
/// block of the file is one byte repeated; each page read must be one of
/// the values its block ever had ([`ColdReaders::will_write`] adds one
/// before the commit that writes it). A read failing or wrong panics the
/// reader, and [`ColdReaders::stop`] with it.
pub struct ColdReaders {
    values: Arc<Mutex<HashMap<u64, Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl ColdReaders {
    /// `n` readers of blocks `0..nblk` (of `bs` bytes) of `path`, whose
    /// block `b` holds `first(b)` now.
    pub fn start(
        path: PathBuf,
        nblk: u64,
        bs: u64,
        n: usize,
        first: impl Fn(u64) -> u8,
    ) -> ColdReaders {
        let values: Arc<Mutex<HashMap<u64, Vec<u8>>>> =
            Arc::new(Mutex::new((0..nblk).map(|b| (b, vec![first(b)])).collect()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|k| {
                let (path, values, stop) = (path.clone(), values.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut reads, mut blk) = (0u64, k as u64);
                    while !stop.load(Ordering::Relaxed) {
                        blk = (blk + 3) % nblk;
                        let d = read_cold(&path, blk, bs)
                            .unwrap_or_else(|e| panic!("reader {k}: blk #{blk}: {e}"));
                        assert_eq!(d.len() as u64, bs, "reader {k}: blk #{blk}");
                        // A read(2) of a block racing a commit may see pages
                        // of two versions; each page is one version.
                        let vals = values.lock().unwrap()[&blk].clone();
                        for (i, page) in d.chunks(4096).enumerate() {
                            assert!(
                                vals.contains(&page[0]) && page.iter().all(|&x| x == page[0]),
                                "reader {k}: blk #{blk} page {i}: wrong data ({:#x}…), valid {vals:x?}",
                                page[0]
                            );
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        ColdReaders {
            values,
            stop,
            threads,
        }
    }

    /// Block `blk` may hold `byte` from now on (call before committing it).
    pub fn will_write(&self, blk: u64, byte: u8) {
        self.values
            .lock()
            .unwrap()
            .get_mut(&blk)
            .unwrap()
            .push(byte);
    }

    /// Stops the readers; how many blocks they read in all.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().unwrap()).sum()
    }
}

/// The server (taken away by `away`) never comes back, the daemon of `env`
/// running with `-storagewait 1s` over file `f` (blocks of `bs`, at least
/// 7): reads of blocks it never loaded fail with EIO after about that
/// long, alone; the blocks read before keep being served exactly, head/at
/// stays; the daemon stays up, not in EIO mode.
pub fn server_never_back(env: &mut Env, f: zodb::Oid, bs: u64, away: impl FnOnce(&mut Env)) {
    let path = env.w().head_file(f);
    let fd = std::fs::File::open(&path).unwrap();
    // Out of order: block 0 right after block 1 is no sequential reader,
    // so the daemon loads nothing ahead (it would, after 0 then 1, up to
    // 8 blocks: the blocks below would have been loaded).
    env.check_block(f, 1, bs, None);
    env.check_block(f, 0, bs, None);
    let want0 = env.py.block(f, 0, None);
    let head = env.w().head();
    away(env);
    wait_stat(env, "zconnlost", 1, Duration::from_secs(10));

    for blk in [5u64, 6] {
        let t0 = Instant::now();
        let e = super::read_block_of(&fd, blk, bs).unwrap_err();
        let dt = t0.elapsed();
        assert_eq!(super::errno(&e), libc::EIO, "blk #{blk}: {e}");
        assert!(
            dt >= Duration::from_millis(900) && dt < Duration::from_secs(5),
            "blk #{blk}: EIO after {dt:?}"
        );
    }
    assert!(stat(env, "zgiveup") >= 2);
    for _ in 0..3 {
        assert_eq!(super::read_block_of(&fd, 0, bs).unwrap(), want0);
    }
    assert_eq!(env.w().head(), head);
    let log = env.w().log();
    assert!(!log.contains("EIO mode"), "{log}");
    assert!(log.contains("give up after"), "{log}");
    assert!(
        env.w_mut().wait_exit(Duration::ZERO).is_none(),
        "daemon died"
    );
}

/// What [`server_silent`] runs with: `-storagewait` of the daemon.
pub const SILENT_WAIT: Duration = Duration::from_secs(3);

/// For this long after a block's load failed, the daemon answers the
/// requests for that block with its error (`fs::cache::FAILURE_ECHO`).
pub const FAILURE_ECHO: Duration = Duration::from_secs(1);

/// What [`server_silent`] measured.
pub struct Silence {
    /// How long each cold read waited for its EIO.
    pub gave_up: Vec<Duration>,
}

/// The server goes silent — connections open, nothing answered (`silence`)
/// — under the daemon of `env` (`-debug -storagewait 3s`, [`SILENT_WAIT`])
/// over file `f` of 8 blocks of `bs`, whose blocks 0 and 2 only were read
/// before, and whose `.wcfs/debug/zhead` stream is `zhead` with `tids`
/// reported so far. While silent: reads of blocks never loaded (5, 7) fail
/// with EIO no earlier than `-storagewait` and within a second past it;
/// blocks read before are served exactly; head/at stays (and a commit
/// made meanwhile when `commit_while_silent`, Python reaching the server
/// its own way, is not seen). Once the server speaks again (`speak`), every
/// block read is exact against Python's ZODB, and every commit — before,
/// during, after — is reported once, in order; the daemon never went to
/// EIO mode.
pub fn server_silent(
    env: &mut Env,
    f: zodb::Oid,
    bs: u64,
    (zhead, tids): (&ZHead, &mut Vec<Tid>),
    silence: impl FnOnce(&mut Env),
    speak: impl FnOnce(&mut Env),
    commit_while_silent: bool,
) -> Silence {
    let path = env.w().head_file(f);
    let fd = std::fs::File::open(&path).unwrap();
    let want0 = env.py.block(f, 0, None);
    let want2 = env.py.block(f, 2, None);
    let head = env.w().head();
    let (lost0, rec0) = (stat(env, "zconnlost"), stat(env, "zreconnect"));
    silence(env);

    let mut gave_up = Vec::new();
    for (i, blk) in [5u64, 7].into_iter().enumerate() {
        let t0 = Instant::now();
        let r = super::read_block_of(&fd, blk, bs);
        let dt = t0.elapsed();
        let e = r.expect_err(&format!("blk #{blk} read while the server is silent"));
        assert_eq!(super::errno(&e), libc::EIO, "blk #{blk}: {e}");
        // The daemon gives up at the wait (timer slack aside) and must
        // within a second past it.
        assert!(
            dt >= SILENT_WAIT - Duration::from_millis(20)
                && dt < SILENT_WAIT + Duration::from_secs(1),
            "blk #{blk}: EIO after {dt:?} (-storagewait {SILENT_WAIT:?}); log:\n{}",
            env.w().log()
        );
        gave_up.push(dt);
        // Blocks read before are served meanwhile, exactly, at once.
        for (b, want) in [(0, &want0), (2, &want2)] {
            let t0 = Instant::now();
            assert_eq!(&read_cold(&path, b, bs).unwrap(), want, "blk #{b} (cached)");
            assert!(
                t0.elapsed() < SILENT_WAIT,
                "blk #{b} (cached): {:?}",
                t0.elapsed()
            );
        }
        if i == 0 && commit_while_silent {
            env.py.fill(f, 3, "zblk0", 0x77, bs as usize);
            tids.push(env.py.commit());
        }
    }
    let last_eio = Instant::now();
    assert!(stat(env, "zgiveup") >= 2);
    assert_eq!(
        env.w().head(),
        head,
        "head moved while the server was silent"
    );

    speak(env);
    wait_stat(env, "zconnlost", lost0 + 1, Duration::from_secs(30));
    wait_stat(env, "zreconnect", rec0 + 1, Duration::from_secs(60));
    env.py.connected();
    env.py.fill(f, 4, "zblk0", 0x78, bs as usize);
    tids.push(env.commit());
    zhead.wait_last(*tids.last().unwrap());
    // Documented behaviour, not a race: the failed blocks' errors echo
    // this long.
    std::thread::sleep((last_eio + FAILURE_ECHO).saturating_duration_since(Instant::now()));
    for blk in 0..8 {
        env.check_block(f, blk, bs, None);
    }
    env.check_block(f, 3, bs, Some(tids[tids.len() - 2]));
    assert_eq!(zhead.get(), *tids, "heads reported vs commits");
    let log = env.w().log();
    assert!(!log.contains("EIO mode"), "{log}");
    assert!(log.contains("give up after"), "{log}");
    assert!(
        env.w_mut().wait_exit(Duration::ZERO).is_none(),
        "daemon died"
    );
    Silence { gave_up }
}
