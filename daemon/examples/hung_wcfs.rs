//! A hung daemon, for the lifecycle tests: `hung_wcfs ZURL MOUNTPOINT`
//! mounts like wcfsd (source = ZURL, type `fuse.wcfs`, `/dev/fuse` held by
//! this process) but takes every request after INIT and never answers it.
//!
//! This is the fault a SIGSTOP cannot make reliably: a request the daemon
//! has *taken*. Its caller then sleeps uninterruptibly (not even SIGKILL
//! ends it) until the connection is aborted — so `wcfsd status` must not
//! be that caller, and `wcfsd stop` must abort. A real wcfsd gets there
//! through a deadlock; this gets there on purpose.

use fuser::{FileHandle, Filesystem, INodeNo, ReplyAttr, ReplyEntry, Request};
use std::ffi::OsStr;

struct Hung;

/// Holds the reply forever (dropping it would answer EIO).
fn hang<T>(_reply: T) -> ! {
    loop {
        std::thread::park();
    }
}

impl Filesystem for Hung {
    fn lookup(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        hang(reply)
    }
    fn getattr(&self, _req: &Request, _ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        hang(reply)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [zurl, mountpoint] = <[String; 2]>::try_from(args).expect("usage: hung_wcfs ZURL MNT");
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(zurl),
        fuser::MountOption::CUSTOM("subtype=wcfs".into()),
    ];
    // Several workers: each hangs on its own request, so the first one
    // does not keep the others from being taken.
    config.n_threads = Some(4);
    let session = fuser::Session::new(Hung, &mountpoint, &config).expect("mount");
    eprintln!("hung_wcfs: mounted at {mountpoint}");
    session.run().expect("session");
}
