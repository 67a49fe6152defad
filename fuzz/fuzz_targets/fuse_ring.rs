#![no_main]
// FUSE requests as the kernel puts them in an io_uring ring entry (and as
// read(2) from /dev/fuse): the decoder must answer every input with a header
// and an Op (Malformed for a bad body) or Err, never panic; the reply
// encoders must take any values.
//
// Input: in_out area (128 bytes, zero-padded), op_in area (128 bytes,
// zero-padded), the rest is the payload.
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};
use wcfsd::fs::uring::wire;

fuzz_target!(|data: &[u8]| {
    let area = |from: usize| {
        let mut a = [0u8; 128];
        let part = data.get(from..).unwrap_or_default();
        let n = part.len().min(128);
        a[..n].copy_from_slice(&part[..n]);
        a
    };
    let in_out = area(0);
    let op_in = area(128);
    let payload = data.get(256..).unwrap_or_default();

    // The header area cut short too, when the input is.
    let _ = wire::decode(&in_out[..data.len().min(128)], &op_in, payload);
    let _ = wire::decode_dev(data);
    let _ = wire::payload(
        payload,
        u32::from_le_bytes([op_in[0], op_in[1], op_in[2], op_in[3]]),
    );

    let Ok((header, op)) = wire::decode(&in_out, &op_in, payload) else {
        return;
    };
    let mut out = Vec::new();
    let word = |i: usize| u64::from_le_bytes(op_in[(i % 16) * 8..][..8].try_into().unwrap());
    let kinds = [
        fuser::FileType::NamedPipe,
        fuser::FileType::CharDevice,
        fuser::FileType::BlockDevice,
        fuser::FileType::Directory,
        fuser::FileType::RegularFile,
        fuser::FileType::Symlink,
        fuser::FileType::Socket,
    ];
    let kind = kinds[(header.uid % 7) as usize];
    // Times on either side of the epoch.
    let time = |w: u64| {
        let d = Duration::new(w >> 1 & 0xffff_ffff_ffff, (w >> 33) as u32);
        if w & 1 == 0 {
            UNIX_EPOCH + d
        } else {
            UNIX_EPOCH - d
        }
    };
    let attr = fuser::FileAttr {
        ino: fuser::INodeNo(header.nodeid),
        size: word(0),
        blocks: word(1),
        atime: time(word(2)),
        mtime: time(word(3)),
        ctime: time(word(4)),
        crtime: time(word(5)),
        kind,
        perm: header.gid as u16,
        nlink: header.pid,
        uid: header.uid,
        gid: header.gid,
        rdev: header.len,
        blksize: header.opcode,
        flags: header.pid,
    };
    let ttl = |w: u64| Duration::new(w, (w >> 32) as u32 % 1_000_000_000);
    wire::entry_out(&mut out, word(6), ttl(word(7)), ttl(word(8)), &attr);
    wire::attr_out(&mut out, ttl(word(9)), &attr);
    wire::open_out(&mut out, word(10), header.uid);
    wire::write_out(&mut out, header.gid);
    let w = word(11);
    wire::statfs_out(
        &mut out,
        w,
        !w,
        w >> 3,
        w << 3,
        w ^ 7,
        header.uid,
        header.gid,
        header.pid,
    );
    assert_eq!(out.len(), 128 + 104 + 16 + 8 + 80);

    // Dirents of the payload's NUL-separated names until full.
    let max = out.len() + (word(12) % 8192) as usize;
    for (i, name) in payload.split(|&b| b == 0).enumerate() {
        let before = out.len();
        if wire::dirent(&mut out, max, word(i), i as u64, kinds[i % 7], name) {
            assert_eq!(out.len(), before);
            break;
        }
        assert!(out.len() <= max && (out.len() - before) % 8 == 0);
    }
    let _ = format!("{op:?}");
});
