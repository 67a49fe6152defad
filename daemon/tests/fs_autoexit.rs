//! `-autoexit` (SPEC §4): the daemon stays up while a client holds a file
//! (through a descriptor or a mapping) or uses the mount, and unmounts and
//! exits cleanly once nobody has for the idle period
//! (`WCFS_AUTOEXIT_IDLE`, short here).

mod common;

use common::{is_mounted, Env};
use std::time::{Duration, Instant};

const BS: u64 = 64 << 10;
const IDLE: Duration = Duration::from_secs(1);

fn alive(env: &mut Env) -> bool {
    env.w_mut().wait_exit(Duration::ZERO).is_none()
}

#[test]
fn autoexit_after_idle() {
    let mut env = Env::new();
    let f = env.py.new_file(BS);
    for blk in 0..3 {
        env.py.fill(f, blk, "zblk0", 1 + blk as u8, BS as usize);
    }
    env.py.commit();
    // Only this test runs in this binary: setting the variable races with
    // nothing.
    std::env::set_var("WCFS_AUTOEXIT_IDLE", "1s");
    env.mount(&["-autoexit"]);
    let mnt = env.w().mnt.clone();
    let path = env.w().head_file(f);

    // An open descriptor keeps it up well past the idle period.
    let file = std::fs::File::open(&path).unwrap();
    std::thread::sleep(3 * IDLE);
    assert!(
        alive(&mut env),
        "exited with a file open:\n{}",
        env.w().log()
    );
    assert_eq!(env.w().read_block(f, 1, BS), vec![2u8; BS as usize]);

    // So does a mapping whose descriptor is closed.
    // SAFETY: read-only mapping of a file that does not change here.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    drop(file);
    std::thread::sleep(3 * IDLE);
    assert!(alive(&mut env), "exited with a mapping:\n{}", env.w().log());
    assert_eq!(map[2 * BS as usize], 3);
    drop(map);

    // A process working in the mount makes the unmount fail: keep serving.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("4")
        .current_dir(mnt.join("head"))
        .spawn()
        .unwrap();
    std::thread::sleep(3 * IDLE);
    assert!(alive(&mut env), "exited while busy:\n{}", env.w().log());
    assert!(is_mounted(&mnt));
    sleeper.wait().unwrap();

    // Nobody left: exit, cleanly unmounted, after about the idle period.
    let t0 = Instant::now();
    let st = env
        .w_mut()
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("wcfsd did not exit"));
    let log = env.w().log();
    assert!(st.success(), "{st}:\n{log}");
    assert!(t0.elapsed() <= 10 * IDLE, "took {:?}:\n{log}", t0.elapsed());
    assert!(!is_mounted(&mnt), "still mounted:\n{log}");
    assert!(log.contains("autoexit: no client activity"), "{log}");
    assert!(
        log.contains("still serving"),
        "busy unmount not seen:\n{log}"
    );
}
