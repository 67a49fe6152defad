//! Gives libwcfs.so its SONAME, `libwcfs.so.<WCFS_ABI_VERSION>` (defined in
//! src/ffi/abi.rs only): the install steps (cmake/, packaging/) install it
//! as libwcfs.so.<version> with the links libwcfs.so.<abi> and libwcfs.so,
//! and programs linked against it then depend on libwcfs.so.<abi> only.
include!("src/ffi/abi.rs");

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libwcfs.so.{WCFS_ABI_VERSION}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ffi/abi.rs");
}
