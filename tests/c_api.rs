//! The C side of libwcfs, driven from cargo so that `cargo test --workspace`
//! runs it: install libwcfs into a temporary prefix with the CMake package
//! of `cmake/`, build a tiny outside project against it with CMake and with
//! pkg-config, and run the CTest suite of `ctests/` (built against the
//! installed package only) with a real wcfsd serving a data.fs that Python
//! ZODB wrote.
//!
//! Needs cmake, pkg-config and a C/C++ compiler (dev/setup installs them).

#[path = "../daemon/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The profile directory of this test executable (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// libwcfs.so of this build, brought up to date with cargo (a no-op when
/// `cargo test` already built it).
fn libwcfs() -> PathBuf {
    let dir = profile_dir();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "-q", "-p", "wcfs", "--lib"])
        .current_dir(testkit::repo());
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build -p wcfs");
    assert!(st.success(), "cargo build -p wcfs --lib failed");
    let lib = dir.join("libwcfs.so");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// Runs `cmd`, panics with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Installs libwcfs into `<tmp>/prefix` the documented way; returns the prefix.
fn install(tmp: &Path) -> PathBuf {
    let lib = libwcfs();
    let build = tmp.join("install-build");
    let prefix = tmp.join("prefix");
    let repo = testkit::repo();
    run(Command::new("cmake")
        .arg("-S")
        .arg(repo.join("cmake"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DWCFS_LIBRARY={}", lib.display()))
        .arg(format!("-DWCFS_DAEMON={}", common::wcfsd_bin().display())));
    run(Command::new("cmake")
        .arg("--install")
        .arg(&build)
        .arg("--prefix")
        .arg(&prefix));
    prefix
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[test]
fn install_and_link_from_outside_with_cmake_and_pkg_config() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = install(tmp.path());
    // The SONAME's number is the ABI version (src/ffi/abi.rs), not the
    // package version's major.
    let major = wcfs::ffi::WCFS_ABI_VERSION;

    // The installed layout: versioned library, SONAME links, header, package files.
    let lib = prefix.join("lib");
    let real = lib.join(format!("libwcfs.so.{}", version()));
    assert!(real.is_file(), "{} missing", real.display());
    assert_eq!(
        std::fs::read_link(lib.join(format!("libwcfs.so.{major}"))).unwrap(),
        PathBuf::from(format!("libwcfs.so.{}", version()))
    );
    assert_eq!(
        std::fs::read_link(lib.join("libwcfs.so")).unwrap(),
        PathBuf::from(format!("libwcfs.so.{major}"))
    );
    for f in [
        "bin/wcfsd",
        "include/wcfs.h",
        "lib/cmake/wcfs/wcfsConfig.cmake",
        "lib/cmake/wcfs/wcfsConfigVersion.cmake",
        "lib/pkgconfig/wcfs.pc",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    let dynamic = run(Command::new("readelf").arg("-d").arg(&real));
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains(&format!("Library soname: [libwcfs.so.{major}]")),
        "no SONAME libwcfs.so.{major}:\n{dynamic}"
    );
    assert_eq!(
        std::fs::read(prefix.join("include/wcfs.h")).unwrap(),
        std::fs::read(testkit::repo().join("include/wcfs.h")).unwrap(),
        "installed header differs from include/wcfs.h"
    );

    let outside = testkit::repo().join("ctests/outside");
    let want = format!(
        "libwcfs {}; attach(NULL): wcfs_attach: mountpoint is NULL",
        version()
    );

    // CMake: find_package(wcfs CONFIG REQUIRED) + wcfs::wcfs.
    let build = tmp.path().join("outside-cmake");
    run(Command::new("cmake")
        .arg("-S")
        .arg(&outside)
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())));
    run(Command::new("cmake").arg("--build").arg(&build));
    let exe = build.join("outside");
    let out = run(&mut Command::new(&exe));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    let needed = run(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        String::from_utf8_lossy(&needed.stdout).contains(&format!("[libwcfs.so.{major}]")),
        "the outside program does not depend on the SONAME"
    );

    // pkg-config: cc main.c $(pkg-config --cflags --libs wcfs).
    let pcpath = prefix.join("lib/pkgconfig");
    let pc = |args: &[&str]| -> Vec<String> {
        let out = run(Command::new("pkg-config")
            .args(args)
            .arg("wcfs")
            .env("PKG_CONFIG_PATH", &pcpath));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(pc(&["--modversion"]), vec![version().to_string()]);
    let libdir = pc(&["--variable=libdir"]).join("");
    let exe = tmp.path().join("outside-pc");
    run(Command::new("cc")
        .arg(outside.join("main.c"))
        .args(pc(&["--cflags"]))
        .args(pc(&["--libs"]))
        .arg(format!("-Wl,-rpath,{libdir}"))
        .arg("-o")
        .arg(&exe));
    let out = run(&mut Command::new(&exe));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
}

/// The CTest suite against the installed package, with a daemon.
#[test]
fn ctest_suite_against_installed_library_and_real_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = install(tmp.path());

    // A data.fs with one ZBigFile of 4 blocks of 4096 bytes, block k filled
    // with k+1, written by Python; the driver quits so the C tests can open
    // their own on the same data.fs.
    let datafs = tmp.path().join("data.fs");
    let foid = {
        let mut py = common::Driver::start(&datafs);
        let f = py.new_file(4096);
        for blk in 0..4u8 {
            py.fill(f, blk.into(), "zblk0", blk + 1, 4096);
        }
        py.commit();
        f
    };
    let zurl = format!("file://{}", datafs.display());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let wcfs = common::Wcfs::start(&zurl, &mnt, &tmp.path().join("wcfsd.log"), &[])
        .unwrap_or_else(|e| panic!("{e}"));

    let build = tmp.path().join("ctests");
    run(Command::new("cmake")
        .arg("-S")
        .arg(testkit::repo().join("ctests"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())));
    run(Command::new("cmake").arg("--build").arg(&build));
    let out = Command::new("ctest")
        .arg("--test-dir")
        .arg(&build)
        .arg("--output-on-failure")
        .env("WCFS_TEST_MNT", &mnt)
        .env("WCFS_TEST_DATAFS", &datafs)
        .env("WCFS_TEST_OID", foid.to_string())
        .env("WCFS_PYTHON", testkit::python())
        .env(
            "WCFS_TEST_DRIVER",
            testkit::repo().join("python/fs_testdata/driver.py"),
        )
        .env("WCFS_TEST_ZURL", &zurl)
        // join(autostart) must find the installed prefix's bin/wcfsd by
        // itself (from libwcfs.so's location); the tests use this one only
        // to stop the daemon.
        .env_remove("WCFS_WCFSD")
        .env("WCFS_TEST_WCFSD", prefix.join("bin/wcfsd"))
        .output()
        .expect("run ctest");
    // test_join autostarted a daemon for this zurl: leave nothing of it.
    let _ = lifecycle::remove_all(&zurl, &lifecycle::Config::default());
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "ctest failed ({}):\n{stdout}\n{}\n--- wcfsd log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        wcfs.log()
    );
    // Every test ran: none skipped for want of the daemon environment.
    assert!(
        stdout.contains("100% tests passed") && !stdout.contains("Skipped"),
        "ctest did not run every test:\n{stdout}"
    );
}
