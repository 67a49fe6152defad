//! FUSE over io_uring (Linux ≥ 6.14): the byte codec of ring entries.

pub mod wire;
