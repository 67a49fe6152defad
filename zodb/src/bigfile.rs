//! wendelin.core's ZBigFile and its blocks.
//!
//! (Module prose to be written with the implementation.)
