//! BTrees (`LOBTree`/`LOBucket`, `IOBTree`/`IOBucket`) read from state.
//!
//! (Module prose to be written with the implementation.)
