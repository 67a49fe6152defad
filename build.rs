//! Gives libwcfs.so its SONAME: the install step (cmake/) installs it as
//! libwcfs.so.<version> with the links libwcfs.so.<major> and libwcfs.so, and
//! programs linked against it then depend on libwcfs.so.<major> only.
fn main() {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libwcfs.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
