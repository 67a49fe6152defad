//! wcfsd — the WCFS daemon.
//!
//! `wcfsd [options] ZURL MOUNTPOINT` serves the ZBigFiles of a database over
//! FUSE (SPEC §4–§5; see [`wcfsd::fs`] for the design).
//!
//! `wcfsd serve|start|status|stop ZURL` work by zurl, at the mountpoint
//! clients joining that zurl look at (see the `wcfs_lifecycle` crate, which
//! the client library shares): `serve` runs the daemon there in the
//! foreground, like upstream's `wcfs serve` (for a service manager or a
//! terminal; the lock against concurrent starts is held until the mount
//! answers); `start` runs it in the background (detached, logging to
//! `/dev/shm/wcfs/<sha1>.log`) unless one serves already, and returns once
//! it serves — with exactly the options given: unlike a joining client it
//! adds no `-autoexit`; `status` exits 0 only for a healthy daemon;
//! `stop` ends it, however stuck.
//!
//! `wcfsd ls ZURL` (a data.fs, or a PostgreSQL database)
//! opens the storage exactly as the daemon does, finds every ZBigFile, and
//! loads every block of each as of head — a quick way to see what would be
//! served and to check that all of it is readable.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use wcfs_lifecycle as lifecycle;
use wcfsd::cli::{self, Command};
use zodb::bigfile::ZBigFile;
use zodb::storage::filestorage::FileStorage;
use zodb::zurl::{self, ZUrl};
use zodb::{Storage, Tid};

/// Large buffers must go back to the system when freed. glibc's default
/// raises its mmap threshold past the size of the first large buffer freed,
/// after which every worker thread's arena keeps ~12–16 MiB of freed
/// blocks: with 12 workers ~200 MiB held for nothing, against a block cache
/// of 32 MiB. A fixed threshold keeps large buffers in their own mappings,
/// returned on free; the zodb crate recycles block-sized record buffers
/// itself (a small bounded pool), so the steady state allocates none.
fn release_large_buffers() {
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    release_large_buffers();
    // Arguments that are not UTF-8 (a zurl with odd bytes) are refused
    // with a message, not a panic.
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(a) => args.push(a),
            Err(a) => {
                eprintln!("wcfsd: argument {a:?} is not valid UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    // A password on our command line is world-readable (/proc/PID/cmdline,
    // ps): hide it at once (see `hide_passwords_in_cmdline`).
    hide_passwords_in_cmdline();
    let parsed = match cli::parse(&args) {
        // Started by the lifecycle with a password: the zurl comes through a
        // pipe, the command line has its public form.
        Ok(Command::Serve {
            zurl,
            mountpoint,
            opts,
        }) => match lifecycle::zurl_from_fd(&zurl) {
            Ok(full) => Ok(Command::Serve {
                zurl: full.unwrap_or(zurl),
                mountpoint,
                opts,
            }),
            Err(e) => {
                eprintln!("wcfsd: {e}");
                return ExitCode::from(2);
            }
        },
        other => other,
    };
    // Before any thread exists (the lifecycle's serve-lock thread, a
    // storage's threads): see `wcfsd::fs::block_stop_signals`.
    if matches!(
        parsed,
        Ok(Command::Serve { .. } | Command::ServeZurl { .. })
    ) {
        if let Err(e) = wcfsd::fs::block_stop_signals() {
            eprintln!("wcfsd: block signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    match parsed {
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("{}", cli::version_text());
            ExitCode::SUCCESS
        }
        Ok(Command::Ls(zurl)) => match ls(&zurl) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wcfsd: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Command::Serve {
            zurl,
            mountpoint,
            opts,
        }) => serve(&zurl, &mountpoint, opts),
        Ok(Command::ServeZurl { zurl, opts }) => {
            let cfg = lifecycle::Config::default();
            match lifecycle::prepare_serve(&zurl, &cfg) {
                Ok(slot) => {
                    let mountpoint = slot.mountpoint.clone();
                    slot.release_when_ready(&zurl, Duration::from_secs(120));
                    serve(&zurl, &mountpoint, opts)
                }
                Err(e) => {
                    eprintln!("wcfsd: serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::Start { zurl, args }) => {
            let cfg = lifecycle::Config {
                // This very binary: `wcfsd start` starts itself.
                wcfsd: std::env::current_exe().ok(),
                daemon_args: args,
                ..lifecycle::Config::default()
            };
            match lifecycle::start(&zurl, &cfg) {
                Ok(s) => {
                    let pid = s.pid.map_or(String::new(), |p| format!(" (pid {p})"));
                    let what = if s.already {
                        "already served"
                    } else if s.cleaned_dead {
                        "started (over the dead mount of a previous daemon)"
                    } else {
                        "started"
                    };
                    eprintln!("wcfsd: {}: {what}{pid}", lifecycle::shown(&zurl));
                    println!("{}", s.mountpoint.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wcfsd: start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::Status { zurl, timeout }) => {
            let timeout = timeout.unwrap_or(lifecycle::Config::default().probe_timeout);
            match lifecycle::status_with(&zurl, timeout) {
                Ok(st) => {
                    println!("{}", st.summary());
                    ExitCode::from(status_code(&st.state))
                }
                Err(e) => {
                    println!("{}: unknown: {e}", lifecycle::shown(&zurl));
                    ExitCode::from(4)
                }
            }
        }
        Ok(Command::Stop { zurl, timeout }) => {
            let mut cfg = lifecycle::Config::default();
            if let Some(t) = timeout {
                cfg.probe_timeout = t;
            }
            match lifecycle::stop(&zurl, &cfg) {
                Ok(s) => {
                    let pid = s.pid.map_or(String::new(), |p| format!(" pid {p}"));
                    let mnt = s.mountpoint.display();
                    println!(
                        "{}: {}",
                        lifecycle::shown(&zurl),
                        match s.how {
                            lifecycle::StopHow::NotRunning => format!("not running ({mnt})"),
                            lifecycle::StopHow::Graceful =>
                                format!("stopped{pid}, unmounted {mnt}"),
                            lifecycle::StopHow::Killed =>
                                format!("stuck: connection aborted, killed{pid}, unmounted {mnt}"),
                            lifecycle::StopHow::CleanedDead => {
                                format!("was dead: unmounted its leftover mount at {mnt}")
                            }
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wcfsd: stop: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("wcfsd: {e}\n\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}

/// Replaces the passwords of the zurls on our command line, as the kernel
/// shows it to everyone (`/proc/PID/cmdline`, `ps`), with their public
/// form ([`lifecycle::public_zurl`]; if that is longer, with the scheme and
/// `***`), padding with NULs: the arguments' memory is ours to write.
/// Best effort, and only narrows the window — until we get here the
/// password was visible: give it through `$PGPASSWORD`, `~/.pgpass` or a
/// service file instead (the daemons the lifecycle starts get it through
/// a pipe). Call before any other thread exists.
fn hide_passwords_in_cmdline() {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if !args
        .iter()
        .any(|a| a.to_str().is_some_and(zurl::has_secret))
    {
        return;
    }
    let Some((start, end)) = cmdline_area() else {
        return;
    };
    let mut now = Vec::new();
    let mut new = Vec::new();
    for a in &args {
        now.extend_from_slice(a.as_bytes());
        now.push(0);
        match a.to_str().filter(|a| zurl::has_secret(a)) {
            Some(z) => {
                let public = lifecycle::public_zurl(z);
                let shown = if public.len() <= z.len() {
                    public.into_owned()
                } else {
                    format!("{}***", z.split_once("://").map_or("", |s| s.0))
                };
                new.extend_from_slice(shown.as_bytes());
                new.resize(new.len() + z.len() - shown.len().min(z.len()), 0);
            }
            None => new.extend_from_slice(a.as_bytes()),
        }
        new.push(0);
    }
    if end.checked_sub(start) != Some(now.len()) || new.len() != now.len() {
        return;
    }
    // SAFETY: the kernel says [start, end) is where our argument strings
    // are (the initial stack, mapped and writable); its length is exactly
    // that of the arguments we were given, and we check its bytes are
    // them before writing. No other thread exists yet, and std keeps no
    // reference into it across this call (it reads the strings anew on
    // each `args_os()`).
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, now.len());
        if area != &now[..] {
            return;
        }
        area.copy_from_slice(&new);
    }
}

/// Where the kernel keeps our command line: `arg_start` and `arg_end` of
/// `/proc/self/stat` (fields 48 and 49; the second field, the command
/// name, is in parentheses and may hold spaces).
fn cmdline_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts with field 3.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// Serves in this process until unmounted (SPEC §4).
fn serve(zurl: &str, mountpoint: &Path, mut opts: cli::Options) -> ExitCode {
    let env = std::env::var(cli::AUTOEXIT_IDLE_ENV).ok();
    match cli::autoexit_idle(env.as_deref()) {
        Ok(idle) => opts.autoexit_idle = idle,
        Err(e) => {
            eprintln!("wcfsd: {e}");
            return ExitCode::from(2);
        }
    }
    wcfsd::log::init(opts.debug, opts.trace_fuse);
    match wcfsd::fs::serve(zurl, mountpoint, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let hint = dev_fuse_hint(&e);
            log::error!("{e}{hint}");
            eprintln!("wcfsd: {e}{hint}");
            ExitCode::FAILURE
        }
    }
}

/// What to do when an ordinary user's mount failed for want of
/// `/dev/fuse`: fuser opens it before it hands the mount to fusermount3,
/// and some machines (containers) leave it mode 0600 where udev makes it
/// 0666.
fn dev_fuse_hint(e: &wcfsd::fs::Error) -> String {
    use nix::unistd::{access, geteuid, AccessFlags};
    let denied = matches!(e, wcfsd::fs::Error::Mount { source, .. }
        if source.kind() == std::io::ErrorKind::PermissionDenied);
    if !denied
        || geteuid().is_root()
        || access("/dev/fuse", AccessFlags::R_OK | AccessFlags::W_OK).is_ok()
    {
        return String::new();
    }
    " (this user may not open /dev/fuse: an ordinary user needs it mode 0666, \
     as udev makes it; `chmod 0666 /dev/fuse` as root)"
        .into()
}

/// Exit status of `wcfsd status`, after the LSB init-script convention:
/// 0 running and healthy, 1 dead with leftovers (the mount), 3 not
/// running, 4 anything else (stuck, unhealthy, something foreign mounted).
fn status_code(state: &lifecycle::State) -> u8 {
    match state {
        lifecycle::State::Healthy => 0,
        lifecycle::State::Dead => 1,
        lifecycle::State::Absent => 3,
        lifecycle::State::Stuck(_)
        | lifecycle::State::Unhealthy(_)
        | lifecycle::State::Foreign(_)
        | lifecycle::State::OtherUser(_) => 4,
    }
}

fn ls(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let shown = zurl::redacted(url);
    // Listing needs every oid: a FileStorage's index has them, RelStorage's
    // current_object too, NEO's storage nodes list them; a ZEO server does
    // not say.
    let (st, mut oids): (Box<dyn Storage>, Vec<zodb::Oid>) = match zurl::parse(url)? {
        ZUrl::File(path) => {
            let fs = FileStorage::open(&path, url)?;
            println!(
                "{url}: {} objects, opened in {:.1} ms ({:?})",
                fs.object_count(),
                t0.elapsed().as_secs_f64() * 1e3,
                fs.index_source(),
            );
            let oids = fs
                .index_snapshot()
                .into_iter()
                .map(|(oid, _)| oid)
                .collect();
            (Box::new(fs), oids)
        }
        ZUrl::Zeo { .. } | ZUrl::Demo { .. } => {
            return Err(format!(
                "{shown}: ls lists the objects of a FileStorage, a PostgreSQL database or a NEO cluster; \
                 for a ZEO server, run it on the server's data.fs (for a DemoStorage, on \
                 its base and its changes)"
            )
            .into());
        }
        ZUrl::Neo { .. } => {
            // The storage nodes list the objects alive at a tid, each its
            // partitions (AskOIDsFrom).
            let neo = zurl::open_neo(url, &zodb::storage::Resilience::default())?;
            let oids = neo.object_ids(neo.last_tid()?)?;
            println!(
                "{shown}: {} objects, listed in {:.1} ms",
                oids.len(),
                t0.elapsed().as_secs_f64() * 1e3,
            );
            (Box::new(neo), oids)
        }
        ZUrl::Postgres(uri) => {
            let pg = zodb::storage::postgres::PgStorage::open(&uri)?;
            let oids = pg.object_ids()?;
            println!(
                "{shown}: {} objects, connected in {:.1} ms",
                oids.len(),
                t0.elapsed().as_secs_f64() * 1e3,
            );
            (Box::new(pg), oids)
        }
    };
    let st = &*st;
    let head = st.last_tid()?;
    println!("{shown}: head @{head}");
    oids.sort();
    let mut nfiles = 0;
    for oid in oids {
        let Ok(loaded) = st.load(oid, head) else {
            continue; // deleted objects are simply not files
        };
        let Ok(rec) = zodb::serialize::decode_record(&loaded.data) else {
            continue;
        };
        if rec.class.module != "wendelin.bigfile.file_zodb" || rec.class.name != "ZBigFile" {
            continue;
        }
        nfiles += 1;
        let file = ZBigFile::load(st, oid, head)?;
        let size = file.size(st, head)?;
        let nblk = size.size.div_ceil(file.blksize());
        let t0 = Instant::now();
        let (mut holes, mut last_change) = (0u64, file.serial());
        for blk in 0..nblk {
            let b = file.load_block(st, blk, head)?;
            if b.zblk.is_none() {
                holes += 1;
            }
            last_change = last_change.max(b.max_serial);
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "bigfile/{oid}  blksize {:>8}  size {:>12}  blocks {nblk} ({holes} holes)  \
             last change @{last_change} ({})  all blocks loaded in {:.1} ms ({:.0} MiB/s)",
            file.blksize(),
            size.size,
            tid_time(last_change),
            dt * 1e3,
            size.size as f64 / (1 << 20) as f64 / dt.max(1e-9),
        );
    }
    if nfiles == 0 {
        println!("no ZBigFile in {shown}");
    }
    Ok(())
}

fn tid_time(t: Tid) -> String {
    let tt = t.time();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:06.3} UTC",
        tt.year, tt.month, tt.day, tt.hour, tt.minute, tt.second
    )
}
