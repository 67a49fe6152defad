//! FUSE over io_uring: the ring transport ([`transport`]) and the codec of
//! the requests and replies it carries ([`wire`]).

mod transport;
pub mod wire;

pub(crate) use transport::{start, Negotiated, RingReply};
