//! A mount point reused at once: someone unmounts our daemon and starts a
//! new one at the same path before the old one has noticed (upstream's
//! `test_join_after_crash` does this: its teardown runs `fusermount -u`,
//! and the next test starts a server right away). The old daemon must then
//! leave the new mount alone — neither its end-of-session cleanup nor its
//! `-autoexit` thread may unmount the path again.
//!
//! To make "before the old one has noticed" certain rather than lucky, the
//! old daemon is stopped (SIGSTOP) across the unmount and the new start.

mod common;

use common::{is_mounted, Env, Wcfs};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::Command;
use std::time::Duration;

const BS: u64 = 64 << 10;

#[test]
fn old_daemon_leaves_a_newer_mount_alone() {
    // Only this test runs in this binary: setting the variable races with
    // nothing. A short idle period so that the old daemon's autoexit
    // thread is due the moment it runs again.
    std::env::set_var("WCFS_AUTOEXIT_IDLE", "200ms");
    // Without -autoexit: the end of the old session alone.
    reuse(&[]);
    reuse(&["-autoexit"]);
}

fn reuse(old_args: &[&str]) {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    env.py.fill(f, 0, "zblk0", 7, BS as usize);
    env.py.commit();
    env.mount(old_args);
    let mnt = env.w().mnt.clone();
    let old = Pid::from_raw(env.w().pid().unwrap() as i32);

    kill(old, Signal::SIGSTOP).unwrap();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u: {st}");
    assert!(!is_mounted(&mnt));
    let newer_log = env.dir.path().join("wcfsd-newer.log");
    let newer = Wcfs::start(&env.zurl, &mnt, &newer_log, &[]).unwrap_or_else(|e| panic!("{e}"));
    // Well past the old daemon's idle period.
    std::thread::sleep(Duration::from_millis(600));
    kill(old, Signal::SIGCONT).unwrap();

    let st = env
        .w_mut()
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("old wcfsd did not exit:\n{}", env.w().log()));
    let old_log = env.w().log();
    assert!(st.success(), "old wcfsd: {st}:\n{old_log}");

    // Give a stray unmount time to land before looking.
    std::thread::sleep(Duration::from_millis(300));
    let newer_alive =
        newer.pid().is_some() && kill(Pid::from_raw(newer.pid().unwrap() as i32), None).is_ok();
    assert!(
        is_mounted(&mnt) && newer_alive,
        "old wcfsd {old_args:?} took the newer mount down\nold:\n{old_log}\nnewer:\n{}",
        newer.log()
    );
    assert_eq!(
        std::fs::read_to_string(newer.path(".wcfs/zurl")).unwrap(),
        env.zurl
    );
    assert_eq!(
        Wcfs::pread_block(&newer.head_file(f), 0, BS).unwrap(),
        env.py.block(f, 0, None)
    );
}
