//! Everyday use logs nothing alarming (SPEC §5): a mount, `stat`, `ls -l`,
//! Python's `open()`, and a normal `fusermount3 -u` leave no warning or
//! error in the daemon's log; requests the filesystem does not support get
//! the answer a user expects, quietly.

mod common;

use common::Env;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_of(rc: isize) -> i32 {
    assert!(rc < 0, "call succeeded ({rc}), want an error");
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

#[test]
fn everyday_use_logs_no_warning() {
    let mut env = Env::new();
    let f = env.py.new_file(4096);
    env.py.fill(f, 0, "zblk0", 7, 4096);
    env.py.commit();
    env.mount(&[]);
    let w = env.w();
    let file = w.head_file(f);

    // stat and ls -l of everything a user would look at.
    for p in ["", "head", "head/at", "head/watch", ".wcfs/stats"] {
        std::fs::metadata(w.path(p)).unwrap();
    }
    std::fs::metadata(&file).unwrap();
    for dir in [
        w.path(""),
        w.path("head"),
        w.path("head/bigfile"),
        w.path(".wcfs"),
    ] {
        let out = Command::new("ls").arg("-la").arg(&dir).output().unwrap();
        assert!(out.status.success(), "ls -la {}: {out:?}", dir.display());
    }
    let out = Command::new("ls").arg("-l").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");

    // Python's open() (it asks TCGETS of every file it opens).
    let script = format!(
        "open({:?}, 'rb').read(1); open({:?}).read(); open({:?}, 'r+b', buffering=0).close()",
        file.display().to_string(),
        w.path("head/at").display().to_string(),
        w.path("head/watch").display().to_string(),
    );
    let out = Command::new(common::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "python open(): {out:?}");

    // What is not supported, with the errno a user expects.
    let fd = std::fs::File::open(&file).unwrap();
    let (cf, name) = (cpath(&file), CString::new("user.x").unwrap());
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and buffer; plain syscalls.
    unsafe {
        let rc = libc::getxattr(cf.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64);
        assert_eq!(errno_of(rc), libc::EOPNOTSUPP, "getxattr");
        let rc = libc::listxattr(cf.as_ptr(), buf.as_mut_ptr().cast(), 64);
        assert_eq!(errno_of(rc), libc::EOPNOTSUPP, "listxattr");
        let rc = libc::setxattr(cf.as_ptr(), name.as_ptr(), buf.as_ptr().cast(), 1, 0);
        assert_eq!(errno_of(rc as isize), libc::EOPNOTSUPP, "setxattr");
        let mut tio: libc::termios = std::mem::zeroed();
        let rc = libc::ioctl(fd.as_raw_fd(), libc::TCGETS, &mut tio);
        assert_eq!(errno_of(rc as isize), libc::ENOTTY, "ioctl TCGETS");
        assert_eq!(libc::fsync(fd.as_raw_fd()), 0, "fsync");
    }
    let e = std::fs::create_dir(w.path("head/new")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "mkdir: {e}");
    let e = std::fs::remove_file(w.path("head/at")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "unlink: {e}");
    let e = std::fs::File::create(w.path("head/new")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "create: {e}");
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "open for writing: {e}");
    drop(fd);

    // A normal unmount: the daemon leaves on its own, quietly.
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&w.mnt)
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u: {st}");
    let st = env
        .w_mut()
        .wait_exit(Duration::from_secs(10))
        .expect("daemon still running after fusermount3 -u");
    assert!(st.success(), "daemon exit: {st}");
    let log = env.w().log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with('W') || l.starts_with('E'))
        .collect();
    assert!(bad.is_empty(), "warnings or errors in the log:\n{log}");
    assert!(log.contains("unmounted; bye"), "{log}");
}
