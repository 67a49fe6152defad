//! FUSE side of the daemon. (To be written.)
