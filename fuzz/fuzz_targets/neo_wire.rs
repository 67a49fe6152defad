#![no_main]
// What a NEO node sends, as the client's reader sees it: a stream of
// msgpack packets with no length prefix, delimited by walking their
// headers (`frame_len`), each complete one decoded as [msg_id, code,
// args] and its arguments read as the messages a client handles. Every
// input must give packets or a clear error, never a panic, and a frame
// length never beyond the limit; a decoded packet encodes back to one
// that decodes and encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use zodb::storage::neo::wire;

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    loop {
        // Every prefix is either incomplete or agrees with the whole.
        let whole = wire::frame_len(buf, MAX);
        if let Ok(Some(n)) = whole {
            assert!(n <= buf.len() && n <= MAX);
            for cut in [0, n / 2, n.saturating_sub(1)] {
                if cut < n {
                    assert!(matches!(wire::frame_len(&buf[..cut], MAX), Ok(None) | Err(_)));
                }
            }
            if let Ok(p) = wire::decode_packet(&buf[..n]) {
                let _ = wire::accept_of(&p.args);
                let _ = wire::node_information_of(&p.args);
                let _ = wire::partition_table_of(&p.args);
                let _ = wire::partition_changes_of(&p.args);
                let _ = wire::invalidation_of(&p.args);
                let _ = wire::not_primary_of(&p.args);
                let _ = wire::error_of(&p.args);
                let _ = wire::tids_of(&p.args);
                let _ = wire::transaction_information_of(&p.args);
                let _ = wire::oids_from_of(&p.args);
                let again = wire::encode_packet(p.id, p.code, p.args.clone());
                let back = wire::decode_packet(&again).expect("our own packet decodes");
                // (Bytes, not values: a NaN is not equal to itself.)
                assert_eq!(wire::encode_packet(back.id, back.code, back.args), again);
                let _ = wire::object_of(p);
            }
            buf = &buf[n..];
        } else {
            break;
        }
    }
    let _ = wire::check_handshake(data.get(..6).unwrap_or(data));
});
