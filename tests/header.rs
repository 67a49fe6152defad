//! `include/wcfs.h` is generated from src/ffi/ by cbindgen and committed;
//! this test regenerates it in memory and fails if the committed one is
//! stale. To regenerate after changing the C ABI:
//!
//!     WCFS_BLESS=1 cargo test --release --test header
//!
//! (or, with the cbindgen tool: `cbindgen --config cbindgen.toml --output include/wcfs.h`).

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("read cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn committed_header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/wcfs.h");
    let want = generate();
    if std::env::var_os("WCFS_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write include/wcfs.h");
        eprintln!("wrote {}", path.display());
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "include/wcfs.h is stale: regenerate it with \
         `WCFS_BLESS=1 cargo test --release --test header` and commit it"
    );
}

/// The header declares every function and type SPEC §8 names, with those
/// exact signatures (modulo whitespace), so that a rename in src/ffi/ does
/// not silently break the contract.
#[test]
fn header_has_the_spec_api() {
    let have: String = generate().split_whitespace().collect::<Vec<_>>().join(" ");
    let spec = [
        "typedef uint64_t wcfs_tid;",
        "typedef uint64_t wcfs_oid;",
        "typedef struct wcfs_WCFS wcfs_WCFS;",
        "typedef struct wcfs_Conn wcfs_Conn;",
        "typedef struct wcfs_FileH wcfs_FileH;",
        "typedef struct wcfs_Mapping wcfs_Mapping;",
        "const char *wcfs_last_error(void);",
        "const char *wcfs_version(void);",
        "int wcfs_join(const char *zurl, int autostart, wcfs_WCFS **out);",
        "int wcfs_attach(const char *mountpoint, wcfs_WCFS **out);",
        "const char *wcfs_mountpoint(const wcfs_WCFS *wc);",
        "int wcfs_head_at(wcfs_WCFS *wc, wcfs_tid *out);",
        "int wcfs_close(wcfs_WCFS *wc);",
        "int wcfs_connect(wcfs_WCFS *wc, wcfs_tid at, wcfs_Conn **out);",
        "wcfs_tid wcfs_conn_at(const wcfs_Conn *conn);",
        "int wcfs_conn_resync(wcfs_Conn *conn, wcfs_tid at);",
        "int wcfs_conn_close(wcfs_Conn *conn);",
        "int wcfs_conn_open(wcfs_Conn *conn, wcfs_oid foid, wcfs_FileH **out);",
        "size_t wcfs_fileh_blksize(const wcfs_FileH *fh);",
        "int wcfs_fileh_close(wcfs_FileH *fh);",
        "int wcfs_fileh_mmap(wcfs_FileH *fh, int64_t blk_start, int64_t blk_len, wcfs_Mapping **out);",
        "const uint8_t *wcfs_mapping_mem_start(const wcfs_Mapping *m);",
        "const uint8_t *wcfs_mapping_mem_stop(const wcfs_Mapping *m);",
        "int64_t wcfs_mapping_blk_start(const wcfs_Mapping *m);",
        "int wcfs_mapping_remmap_blk(wcfs_Mapping *m, int64_t blk);",
        "int wcfs_mapping_unmap(wcfs_Mapping *m);",
    ];
    let missing: Vec<_> = spec.iter().filter(|d| !have.contains(*d)).collect();
    assert!(
        missing.is_empty(),
        "header lacks SPEC §8 declarations: {missing:#?}\nheader:\n{have}"
    );
}
