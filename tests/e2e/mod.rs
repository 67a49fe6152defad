//! Shared helpers of the client library's end-to-end tests
//! (`tests/isolation_*.rs`): reading a [`Mapping`]'s memory, comparing it
//! with Python's view of the file (the oracle, fetched through the test
//! driver of `daemon/tests/common`), and child processes that hold their
//! own Conns.
//!
//! A child is the test binary re-executed to run only its `e2e_child`
//! test, with the role in `$E2E_ROLE` and its parameters in more `E2E_*`
//! variables. It answers commands read line by line on stdin with lines
//! `E2E <answer>` on stdout (libtest may print its own words before ours
//! on the same line, so the parent looks for the `E2E ` marker). A child
//! exits when its stdin closes; dropping a [`Child`] kills it.

#![allow(dead_code)] // each test binary uses a different part

use crate::common::watch::{RoleChild, ROLE_ENV};
use crate::common::Driver;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use wcfs::{Conn, FileH, Mapping, Wcfs};
use zodb::{Oid, Tid};

/// The test every isolation test binary defines to host its children.
pub const ENTRY: &str = "e2e_child";
/// How long a child may take to answer one command.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// The seed of a randomized test, also written straight to stderr: libtest
/// only shows captured output of tests that fail by panicking, not of a
/// test binary that dies of a signal (a library bug can SIGBUS us).
pub fn seed(test: &str) -> u64 {
    let seed = testkit::seed(test);
    let _ = writeln!(
        std::io::stderr().lock(),
        "{test}: seed {seed} (reproduce with WCFS_TEST_SEED={seed})"
    );
    seed
}

/// How many steps a randomized test runs: `default`, or `$WCFS_E2E_STEPS`
/// (for long runs by hand: `WCFS_E2E_STEPS=1000 cargo test --release
/// --test isolation_random`).
pub fn steps(default: usize) -> usize {
    std::env::var("WCFS_E2E_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A copy of `len` bytes of mapped memory at `ptr`.
///
/// # Safety
/// `[ptr, ptr+len)` must be mapped and readable for the whole call.
pub unsafe fn copy_mem(ptr: *const u8, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // SAFETY: the caller guarantees the source is mapped; `buf` is ours.
    // We copy instead of borrowing the memory as a slice: a pinner thread
    // may re-map the source (MAP_FIXED) while we look at it.
    unsafe { std::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), len) };
    buf
}

/// All of a live mapping's memory.
pub fn mem(m: &Mapping) -> Vec<u8> {
    let (a, b) = (m.mem_start(), m.mem_stop());
    let len = b as usize - a as usize;
    // SAFETY: a live Mapping keeps [mem_start, mem_stop) mapped readable
    // until it is unmapped (SPEC §7); the tests unmap only after reading.
    unsafe { copy_mem(a, len) }
}

/// File block `blk` as `content` (the whole file, `size` bytes) defines
/// it: `bs` bytes, zeros past the end of the file.
pub fn want_block(content: &[u8], blk: u64, bs: usize) -> Vec<u8> {
    let lo = (blk as usize * bs).min(content.len());
    let hi = ((blk as usize + 1) * bs).min(content.len());
    let mut b = content[lo..hi].to_vec();
    b.resize(bs, 0);
    b
}

/// Compares the memory of a mapping of blocks `[blk_start, …)` with the
/// file `want`: every block, zeros beyond its end. Err names the blocks
/// that differ, where, and (through `name`) what they look like instead.
pub fn check_mem(
    got: &[u8],
    blk_start: i64,
    bs: usize,
    want: &[u8],
    name: &dyn Fn(u64, &[u8]) -> String,
) -> Result<(), String> {
    assert_eq!(
        got.len() % bs,
        0,
        "mapping of {} bytes, blksize {bs}",
        got.len()
    );
    let mut bad = Vec::new();
    for (i, g) in got.chunks(bs).enumerate() {
        let blk = blk_start as u64 + i as u64;
        let w = want_block(want, blk, bs);
        if g != w.as_slice() {
            let off = g.iter().zip(&w).position(|(a, b)| a != b).unwrap();
            bad.push(format!(
                "#{blk} at +{off}: got {:02x?} want {:02x?} (got looks like {})",
                &g[off..(off + 8).min(bs)],
                &w[off..(off + 8).min(bs)],
                name(blk, g)
            ));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let n = bad.len();
    bad.truncate(6);
    Err(format!("{n} block(s) differ: {}", bad.join("; ")))
}

/// Python's content of files at tids, each fetched once.
#[derive(Default)]
pub struct Oracle {
    cache: HashMap<(Oid, Tid), Arc<Vec<u8>>>,
}

impl Oracle {
    pub fn content(&mut self, py: &mut Driver, f: Oid, at: Tid) -> Arc<Vec<u8>> {
        self.cache
            .entry((f, at))
            .or_insert_with(|| Arc::new(py.content(f, Some(at))))
            .clone()
    }

    /// Which of the fetched versions of file `f` block `blk` equals (for
    /// failure messages: stale head data, a wrong `@rev`, zeros…).
    pub fn name_block(&self, f: Oid, blk: u64, bs: usize, data: &[u8]) -> String {
        let mut tids: Vec<Tid> = self
            .cache
            .iter()
            .filter(|((o, _), c)| *o == f && want_block(c, blk, bs) == data)
            .map(|((_, t), _)| *t)
            .collect();
        tids.sort();
        let zero = data.iter().all(|&b| b == 0);
        match (tids.is_empty(), zero) {
            (true, true) => "zeros, at no fetched tid".into(),
            (true, false) => "no fetched version".into(),
            (false, z) => format!(
                "{}the block at {}",
                if z { "zeros = " } else { "" },
                tids.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// The errno of a library result, 0 for Ok.
pub fn errno_of<T>(r: &wcfs::Result<T>) -> i32 {
    r.as_ref().err().map_or(0, |e| e.errno())
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `f` on a thread and waits at most `timeout` for it: None when it
/// did not finish (the thread is left behind; the test fails anyway).
pub fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).ok()
}

// ---------------------------------------------------------------------------
// Child processes.

/// A child process running one role of [`child_main`]: this test binary
/// re-executed (the shared [`RoleChild`] harness), answering commands
/// with `E2E …` lines.
pub struct Child(RoleChild);

impl Child {
    pub fn spawn(role: &str, envs: &[(&str, String)]) -> Child {
        Child(RoleChild::spawn(ENTRY, role, envs))
    }

    pub fn pid(&self) -> i32 {
        self.0.pid()
    }

    pub fn send(&mut self, line: &str) {
        self.0.send(line)
    }

    /// The next `E2E …` answer (the text after the marker).
    pub fn recv(&mut self, timeout: Duration) -> Result<String, String> {
        self.0.next_after("E2E ", timeout)
    }

    /// Sends a command and returns its answer; panics on timeout or death.
    pub fn call(&mut self, line: &str) -> String {
        self.send(line);
        self.recv(CHILD_TIMEOUT)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Waits for an answer that starts with `word`; panics otherwise.
    pub fn expect(&mut self, word: &str) -> String {
        let a = self
            .recv(CHILD_TIMEOUT)
            .unwrap_or_else(|e| panic!("waiting for {word:?}: {e}"));
        assert!(
            a.starts_with(word),
            "child {}: want {word:?}, got {a:?}",
            self.0.role
        );
        a
    }

    /// Closes the child's stdin: a role waiting for commands then exits.
    pub fn finish(&mut self) {
        self.0.finish()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.0.wait_exit(timeout)
    }

    pub fn output(&mut self) -> Vec<String> {
        self.0.seen()
    }
}

/// The signal that ended a process, if any.
pub fn term_signal(st: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    st.signal()
}

/// The environment of a `view` child: mountpoint, file, `at`, mapped range.
pub fn view_env(
    mnt: &std::path::Path,
    f: Oid,
    at: Tid,
    blk_start: i64,
    blk_len: i64,
) -> Vec<(&'static str, String)> {
    vec![
        ("E2E_MNT", mnt.display().to_string()),
        ("E2E_OID", f.to_string()),
        ("E2E_AT", at.to_string()),
        ("E2E_MAP", format!("{blk_start}:{blk_len}")),
    ]
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child: ${name} not set"))
}

fn say(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "E2E {s}");
    let _ = o.flush();
}

fn err_text(e: &wcfs::Error) -> String {
    format!("err {} {}", e.errno(), e.message().replace('\n', " "))
}

/// Entry point of child roles; returns at once in a normal test run.
pub fn child_main() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "view" => role_view(),
        "fault" => role_fault(),
        _ => panic!("unknown role {role}"),
    }
    std::process::exit(0);
}

struct ChildView {
    wc: Wcfs,
    conn: Conn,
    fh: FileH,
    m: Mapping,
}

fn open_view() -> ChildView {
    let mnt = var("E2E_MNT");
    let f: Oid = var("E2E_OID").parse().unwrap();
    let at: Tid = var("E2E_AT").parse().unwrap();
    let map = var("E2E_MAP");
    let (s, l) = map.split_once(':').unwrap();
    let wc = Wcfs::attach(&mnt).unwrap_or_else(|e| panic!("attach {mnt}: {e}"));
    let conn = wc
        .connect(at)
        .unwrap_or_else(|e| panic!("connect {at}: {e}"));
    let fh = conn.open(f).unwrap_or_else(|e| panic!("open {f}: {e}"));
    let m = fh
        .mmap(s.parse().unwrap(), l.parse().unwrap())
        .unwrap_or_else(|e| panic!("mmap {map}: {e}"));
    ChildView { wc, conn, fh, m }
}

/// `view`: a Conn at `$E2E_AT` with one mapping; commands:
/// `sha` → `sha <sha1 of each mapped block, space-separated>`;
/// `resync <tid>` → `ok` | `err <errno> <text>`; `at` → `at <tid>`;
/// `close` → closes everything, `ok`.
fn role_view() {
    let v = open_view();
    let bs = v.fh.blksize();
    say("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut w = line.split_whitespace();
        match w.next() {
            Some("sha") => {
                let data = mem(&v.m);
                let shas: Vec<String> = data.chunks(bs).map(testkit::sha1_hex).collect();
                say(&format!("sha {}", shas.join(" ")));
            }
            Some("resync") => {
                let at: Tid = w.next().unwrap().parse().unwrap();
                match v.conn.resync(at) {
                    Ok(()) => say("ok"),
                    Err(e) => say(&err_text(&e)),
                }
            }
            Some("at") => say(&format!("at {}", v.conn.at())),
            Some("close") => {
                let r = [v.m.unmap(), v.fh.close(), v.conn.close(), v.wc.close()];
                match r.iter().find_map(|r| r.as_ref().err()) {
                    None => say("ok"),
                    Some(e) => say(&err_text(e)),
                }
            }
            other => panic!("view child: unknown command {other:?}"),
        }
    }
}

/// `fault`: opens a view, reads it (`read <sum>`), then releases
/// `$E2E_WHAT` (`unmap`, `fileh`, `conn`, `wcfs`, or `none`), reports what
/// the API says afterwards (`api <name>=<errno> …`), says `touching` and
/// reads the memory again — which must kill it with SIGSEGV or SIGBUS
/// (else it says `survived`).
fn role_fault() {
    let v = open_view();
    // The address range as the application holds it: raw pointers that
    // outlive the handle.
    let (a, len) = (
        v.m.mem_start(),
        v.m.mem_stop() as usize - v.m.mem_start() as usize,
    );
    // SAFETY: mapped while the view is open; after the release below the
    // read must fault — which is what this role checks.
    let sum = || {
        unsafe { copy_mem(a, len) }
            .iter()
            .map(|&b| b as u64)
            .sum::<u64>()
    };
    say(&format!("read {}", sum()));
    let what = var("E2E_WHAT");
    let closed = match what.as_str() {
        "unmap" => v.m.unmap(),
        "fileh" => v.fh.close(),
        "conn" => v.conn.close(),
        "wcfs" => v.wc.close(),
        "none" => Ok(()),
        _ => panic!("E2E_WHAT={what}"),
    };
    if let Err(e) = &closed {
        say(&format!("close {}", err_text(e)));
    }
    // What the handles below the released one say now (SPEC §8: ENOTCONN
    // for children of a closed parent; some error for a released handle).
    let mut api = vec![format!(
        "remmap={}",
        errno_of(&v.m.remmap_blk(v.m.blk_start()))
    )];
    if what != "unmap" {
        let m2 = v.fh.mmap(v.m.blk_start(), 1);
        api.push(format!("mmap={}", errno_of(&m2)));
        if let Ok(m2) = m2 {
            let _ = m2.unmap();
        }
    }
    if what == "conn" || what == "wcfs" {
        let f2 = v.conn.open(v.fh.oid());
        api.push(format!("open={}", errno_of(&f2)));
        if let Ok(f2) = f2 {
            let _ = f2.close();
        }
    }
    say(&format!("api {}", api.join(" ")));
    say("touching");
    let s = sum();
    say(&format!("survived {s}"));
}

// ---------------------------------------------------------------------------
// Crash reports: a library bug may fault the test process itself (SIGBUS
// from a mapping of a file shorter than the view, SIGSEGV from a mapping
// gone PROT_NONE too early). libtest then shows nothing of the test's
// output, so the last steps are written to stderr from the signal handler.

static STEPS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Remembers a step for the crash report (the last 40 are kept).
pub fn crash_note(s: &str) {
    if let Ok(mut v) = STEPS.lock() {
        if v.len() >= 40 {
            v.remove(0);
        }
        v.push(s.to_string());
    }
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let mut msg =
        format!("\n*** test process got signal {sig} at address {addr:#x}; last steps:\n");
    // try_lock: the faulting thread may be the one holding it.
    if let Ok(v) = STEPS.try_lock() {
        for s in v.iter() {
            msg.push_str("  ");
            msg.push_str(s);
            msg.push('\n');
        }
    }
    // SAFETY: write(2) and sigaction(2) are async-signal-safe; we are
    // dying anyway, so the allocation above is a risk we take for the
    // report. Back to the default action: returning re-runs the faulting
    // access, which then kills the process with this signal.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Installs the SIGSEGV/SIGBUS crash report (replaces Rust's stack
/// overflow report in this test binary). Once per process, and before the
/// first Conn: the library installs its own SIGBUS handler then (it
/// repairs faults of blocks head no longer has) and passes other faults on
/// to the handler it found — ours. Every test of a binary that uses this
/// must call it first thing.
pub fn install_crash_report() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_crash_handlers);
}

fn install_crash_handlers() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction plus handler and flags is a valid
        // argument; the handler only reads the step log and writes stderr.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
