//! Closing is synchronous: when `wcfs_conn_close` / `wcfs_close` return,
//! nothing of the process refers to the mount any more — no descriptor
//! (head/watch, head/bigfile, `@<rev>` files, the root directory), no
//! mapping of a mount file, no pinner thread — so a plain (not lazy)
//! unmount right after the close succeeds.
//!
//! Driven through the C ABI (the functions of `wcfs::ffi`, as a C program
//! calls them), against a real daemon serving a data.fs that Python ZODB
//! wrote, in the orders SPEC §8 allows: children first, parents first
//! (the children still registered, answering `-ENOTCONN`, their memory
//! inaccessible anonymous memory), closing on another thread than the one
//! that opened, closing while another thread faults the memory in with
//! pins in flight, and after a forked child released its detached copies;
//! every other round with pinned blocks (`@<rev>` files open). Each round
//! unmounts with `fusermount3 -u` (not lazy), which fails while anything
//! of the process holds the mount, and starts a new daemon.
//!
//! One test in this binary, so that the thread count of the process is
//! ours alone.

#[path = "../daemon/tests/common/mod.rs"]
mod common;

use common::Env;
use std::ffi::CString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use wcfs::ffi::*;
use wcfs::{Oid, Tid};

const BS: usize = 4096;
const NBLK: u64 = 4;

/// Rounds of open / map / close / unmount (WCFS_CLOSE_ROUNDS overrides).
fn rounds() -> usize {
    std::env::var("WCFS_CLOSE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

fn last_error() -> String {
    // SAFETY: wcfs_last_error returns a NUL-terminated string valid until
    // this thread's next failing call.
    unsafe { std::ffi::CStr::from_ptr(wcfs_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn ok(rc: i32, what: &str) {
    assert_eq!(rc, 0, "{what}: {rc}: {}", last_error());
}

/// The names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path().join("comm");
            Some(std::fs::read_to_string(p).ok()?.trim().to_string())
        })
        .collect()
}

/// What of this process still refers to `mnt`: descriptors and mappings
/// (but the mount's root directory if `root_ok`: an open WCFS holds it).
fn holds(mnt: &Path, root_ok: bool) -> Vec<String> {
    let mnt = mnt.canonicalize().unwrap();
    let mnt = mnt.to_str().unwrap();
    let mut held = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            if target.starts_with(mnt) && !(root_ok && target == Path::new(mnt)) {
                held.push(format!("fd {:?} → {}", e.file_name(), target.display()));
            }
        }
    }
    for l in std::fs::read_to_string("/proc/self/maps").unwrap().lines() {
        if l.contains(mnt) {
            held.push(format!("mapping {l}"));
        }
    }
    held
}

/// `len` bytes of our own memory at `addr`, read without faulting:
/// process_vm_readv faults the pages in like a read would (FUSE reads,
/// pins), but answers EFAULT (None) where a read would fault.
fn read_mem(addr: usize, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: reads from our own address space into `buf`; the kernel
    // checks the remote range.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == len as isize).then_some(buf)
}

/// Handles of one round.
#[derive(Clone, Copy)]
struct Handles {
    wc: *mut wcfs_WCFS,
    conn: *mut wcfs_Conn,
    fh: *mut wcfs_FileH,
    m: *mut wcfs_Mapping,
}

// The handles are ids, usable from any thread (SPEC §8: thread-safe).
unsafe impl Send for Handles {}

/// Attaches, connects at `at`, opens `f`, maps every block and, with
/// `want`, checks the memory against it (reading blocks that changed after
/// `at` makes the daemon pin them).
fn open_all(mnt: &Path, at: Tid, f: Oid, want: Option<&[Vec<u8>]>) -> Handles {
    let cmnt = CString::new(mnt.to_str().unwrap()).unwrap();
    let mut h = Handles {
        wc: std::ptr::null_mut(),
        conn: std::ptr::null_mut(),
        fh: std::ptr::null_mut(),
        m: std::ptr::null_mut(),
    };
    // SAFETY: valid C string and out-pointers, as the C ABI wants.
    unsafe {
        ok(wcfs_attach(cmnt.as_ptr(), &mut h.wc), "attach");
        ok(wcfs_connect(h.wc, at.0, &mut h.conn), "connect");
        ok(wcfs_conn_open(h.conn, f.0, &mut h.fh), "open");
        ok(
            wcfs_fileh_mmap(h.fh, 0, NBLK as i64, &mut h.m),
            "fileh_mmap",
        );
        let Some(want) = want else { return h };
        let p = wcfs_mapping_mem_start(h.m);
        let mem = std::slice::from_raw_parts(p, NBLK as usize * BS);
        for (b, w) in want.iter().enumerate() {
            assert!(
                &mem[b * BS..(b + 1) * BS] == w.as_slice(),
                "block #{b} as of {at} differs from Python's"
            );
        }
    }
    h
}

#[test]
fn close_then_unmount_at_once() {
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    for b in 0..NBLK {
        env.py.fill(f, b, "zblk0", 0x10 + b as u8, BS);
    }
    let mut head = env.py.commit();

    let base = threads();
    let mnt = env.dir.path().join("mnt");
    for round in 0..rounds() {
        env.mount(&[]);
        // Every other round the view is older than head, by a commit that
        // changed blocks 1 and 3: reading them pins (`@<rev>` files open).
        let at = head;
        if round % 2 == 0 {
            env.py.fill(f, 1, "zblk0", round as u8, BS);
            env.py.fill(f, 3, "zblk0", !(round as u8), BS);
            head = env.commit();
        }
        let want: Vec<Vec<u8>> = (0..NBLK).map(|b| env.py.block(f, b, Some(at))).collect();
        let order = round % 6;
        // Order 4 reads the memory for the first time while closing.
        let h = open_all(&mnt, at, f, (order != 4).then_some(&want[..]));
        // (The C ABI's handle calls are safe functions: handles are ids.)
        match order {
            // Children first.
            0 => {
                ok(wcfs_mapping_unmap(h.m), "unmap");
                ok(wcfs_fileh_close(h.fh), "fileh_close");
                ok(wcfs_conn_close(h.conn), "conn_close");
                let held = holds(&mnt, true);
                assert!(held.is_empty(), "round {round}: after conn_close: {held:?}");
                ok(wcfs_close(h.wc), "close");
            }
            // The Conn first, then the WCFS; its children after the unmount.
            1 => {
                ok(wcfs_conn_close(h.conn), "conn_close");
                let held = holds(&mnt, true);
                assert!(held.is_empty(), "round {round}: after conn_close: {held:?}");
                ok(wcfs_close(h.wc), "close");
            }
            // The WCFS first: it takes its Conn down.
            2 => ok(wcfs_close(h.wc), "close"),
            // Closed while another thread faults the memory in, with pins
            // in flight: it reads the view as of `at`, or faults once the
            // memory is inaccessible — never anything else.
            4 => {
                let mem = wcfs_mapping_mem_start(h.m) as usize;
                let reader = std::thread::spawn(move || {
                    (0..NBLK as usize)
                        .map(|b| read_mem(mem + b * BS, BS))
                        .collect::<Vec<_>>()
                });
                ok(wcfs_conn_close(h.conn), "conn_close");
                ok(wcfs_close(h.wc), "close");
                for (b, got) in reader.join().unwrap().into_iter().enumerate() {
                    if let Some(got) = got {
                        assert!(
                            got == want[b],
                            "round {round}: block #{b} read while closing is not the view's"
                        );
                    }
                }
            }
            // A forked child (detached handles) releases its copies: then
            // nothing of the mount is left in it either. The parent closes
            // after it, children first.
            5 => {
                // SAFETY: the child only calls the library's detached paths,
                // reads /proc and _exits.
                match unsafe { libc::fork() } {
                    0 => {
                        let mut good = wcfs_close(h.wc) == 0
                            && wcfs_conn_close(h.conn) == 0
                            && wcfs_fileh_close(h.fh) == 0
                            && wcfs_mapping_unmap(h.m) == 0;
                        let held = holds(&mnt, false);
                        if !held.is_empty() {
                            eprintln!("forked child: still held: {held:?}");
                            good = false;
                        }
                        // SAFETY: leaving the forked child without Rust's exit.
                        unsafe { libc::_exit(if good { 0 } else { 1 }) };
                    }
                    pid => {
                        let mut status = 0;
                        // SAFETY: waiting for our own child.
                        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                        assert!(
                            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                            "round {round}: forked child failed: status {status:#x}"
                        );
                    }
                }
                ok(wcfs_mapping_unmap(h.m), "unmap");
                ok(wcfs_fileh_close(h.fh), "fileh_close");
                ok(wcfs_conn_close(h.conn), "conn_close");
                ok(wcfs_close(h.wc), "close");
            }
            // Closed on another thread than the one that opened.
            _ => std::thread::spawn(move || {
                let h: Handles = h; // the whole struct: it is Send
                ok(wcfs_close(h.wc), "close");
                ok(wcfs_conn_close(h.conn), "conn_close");
            })
            .join()
            .unwrap(),
        }
        let held = holds(&mnt, false);
        assert!(
            held.is_empty(),
            "round {round} (order {order}): still held after close: {held:?}"
        );
        let now = threads();
        assert_eq!(
            now.len(),
            base.len(),
            "round {round} (order {order}): threads {now:?}, before {base:?}"
        );

        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round} (order {order}): unmount right after close: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = env
            .w_mut()
            .wait_exit(Duration::from_secs(20))
            .expect("wcfsd exits once unmounted");
        assert!(st.success(), "wcfsd after unmount: {st}\n{}", env.w().log());
        env.wcfs = None;

        // What is left is released now: children of closed parents answer
        // ENOTCONN until released; release works without the mount.
        if !matches!(order, 0 | 5) {
            assert_eq!(wcfs_mapping_remmap_blk(h.m, 0), -libc::ENOTCONN);
            ok(wcfs_mapping_unmap(h.m), "unmap");
            ok(wcfs_fileh_close(h.fh), "fileh_close");
        }
        if order == 2 {
            ok(wcfs_conn_close(h.conn), "conn_close");
        }
        assert_eq!(wcfs_live_handles(), 0, "round {round}: handles leaked");
    }
}
