//! wcfsd — the WCFS daemon (FUSE serving is the next milestone).
fn main() {
    eprintln!("wcfsd: FUSE serving is not implemented yet");
    std::process::exit(2);
}
