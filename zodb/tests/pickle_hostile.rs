//! Hostile input: the decoder must return an error — quickly, without
//! panicking, without allocating what the input does not justify, without
//! deep recursion — for truncated, corrupt and malicious pickles.

#[path = "pickle_common/mod.rs"]
mod common;

use bytes::Bytes;
use std::time::{Duration, Instant};
use zodb::pickle::{self, Error};

fn dec(b: Vec<u8>) -> Result<pickle::Value, Error> {
    pickle::decode(&Bytes::from(b), 0).map(|(v, _)| v)
}

fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{what} took {:?}",
        t.elapsed()
    );
    r
}

/// Every strict prefix of every corpus pickle is an error (no STOP can
/// appear early), and never a panic. Long pickles are probed at their
/// beginning, their end and a spread in between to keep the test fast.
#[test]
fn every_prefix_is_an_error() {
    let lines = common::oracle("corpus");
    let mut n = 0;
    for line in &lines {
        let f: Vec<&str> = line.split('\t').collect();
        let data = Bytes::from(common::unhex(f[3]));
        let len = data.len();
        let cuts: Vec<usize> = if len <= 3000 {
            (0..len).collect()
        } else {
            (0..512)
                .chain((0..len).step_by(len / 500))
                .chain(len - 512..len)
                .collect()
        };
        for cut in cuts {
            let prefix = data.slice(..cut);
            let r = pickle::decode(&prefix, 0);
            assert!(
                r.is_err(),
                "{} p{}: prefix of {cut}/{len} decoded: {r:?}",
                f[1],
                f[2]
            );
            n += 1;
        }
    }
    assert!(n > 10_000, "only {n} prefixes");
}

/// Corrupting bytes of corpus pickles (deterministic pseudo-random) must
/// never panic; the result may be a value or an error.
#[test]
fn corrupted_corpus_never_panics() {
    let lines = common::oracle("corpus");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for line in &lines {
        let f: Vec<&str> = line.split('\t').collect();
        let data = common::unhex(f[3]);
        if data.len() > 5000 {
            continue;
        }
        for _ in 0..40 {
            let mut d = data.clone();
            for _ in 0..1 + rnd() % 3 {
                let i = (rnd() % d.len() as u64) as usize;
                d[i] = rnd() as u8;
            }
            let _ = pickle::decode(&Bytes::from(d), 0);
        }
    }
    for _ in 0..20_000 {
        let n = (rnd() % 64) as usize;
        let d: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
        let _ = pickle::decode(&Bytes::from(d), 0);
    }
}

/// Length fields far beyond the input are `Truncated`, before any
/// allocation.
#[test]
fn huge_length_fields() {
    let cases: Vec<Vec<u8>> = vec![
        [&[0x8e][..], &u64::MAX.to_le_bytes(), b"."].concat(), // BINBYTES8
        [&[0x8d][..], &u64::MAX.to_le_bytes(), b"."].concat(), // BINUNICODE8
        [&[0x96][..], &(1u64 << 62).to_le_bytes(), b"."].concat(), // BYTEARRAY8
        [&[0x95][..], &u64::MAX.to_le_bytes(), b"N."].concat(), // FRAME
        [&b"B"[..], &u32::MAX.to_le_bytes(), b"."].concat(),
        [&b"X"[..], &u32::MAX.to_le_bytes(), b"."].concat(),
        [&b"T"[..], &i32::MAX.to_le_bytes(), b"."].concat(),
        [&[0x8b][..], &i32::MAX.to_le_bytes(), b"."].concat(), // LONG4
        b"C\xffab.".to_vec(),
        b"U\xffab.".to_vec(),
        b"\x8c\xffab.".to_vec(),
        b"\x8a\xffab.".to_vec(),
    ];
    for c in cases {
        let r = quick("huge length", || dec(c.clone()));
        assert!(matches!(r, Err(Error::Truncated { .. })), "{c:x?}: {r:?}");
    }
    // Negative lengths are corrupt.
    assert!(matches!(
        dec(b"T\xff\xff\xff\xff.".to_vec()),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        dec(b"\x8b\x00\x00\x00\x80.".to_vec()),
        Err(Error::Invalid { .. })
    ));
    // Decimal integers are bounded like Python's.
    let mut long = b"L".to_vec();
    long.extend(vec![b'9'; 100_000]);
    long.extend(b"\n.");
    assert!(matches!(
        quick("long LONG", || dec(long)),
        Err(Error::Limit { .. })
    ));
}

/// A million levels of nesting, in every way there is to nest: an error,
/// quickly, without overflowing the stack (the test thread's stack is small).
#[test]
fn deep_nesting() {
    const N: usize = 1_000_000;
    let mut lists = vec![b']'; N];
    lists.extend(vec![b'a'; N - 1]);
    lists.push(b'.');
    let mut tuples = vec![b'('; N];
    tuples.extend(vec![b't'; N]);
    tuples.push(b'.');
    let mut tuple1 = vec![b')'];
    tuple1.extend(vec![0x85; N]);
    tuple1.push(b'.');
    let mut pids = vec![b'N'];
    pids.extend(vec![b'Q'; N]);
    pids.push(b'.');
    let mut builds = b"\x80\x02cm\nC\n)\x81".to_vec();
    for _ in 0..N / 2 {
        builds.extend(b"N");
        builds.push(b'b');
    }
    builds.push(b'.');
    // d0 = {0: d1}, d1 = {0: d2}, …: all dicts and keys first, then SETITEMs.
    let mut dicts = b"}K\x00".repeat(N / 2);
    dicts.push(b'N');
    dicts.extend(vec![b's'; N / 2]);
    dicts.push(b'.');
    for (what, p) in [
        ("lists", lists),
        ("tuples", tuples),
        ("tuple1", tuple1),
        ("pids", pids),
        ("builds", builds),
        ("dicts", dicts),
    ] {
        let r = quick(what, || dec(p));
        assert!(matches!(r, Err(Error::Limit { .. })), "{what}: {r:?}");
    }
    // Within the limit is fine.
    let mut ok = vec![b']'; 200];
    ok.extend(vec![b'a'; 199]);
    ok.push(b'.');
    assert!(dec(ok).is_ok());
}

/// "Billion laughs" through the memo: each level is a list of two
/// references to the previous one.
#[test]
fn memo_bomb() {
    let mut p = b"\x80\x02]r\x00\x00\x00\x00".to_vec();
    for i in 0u32..100 {
        p.push(b'(');
        p.push(b'j');
        p.extend(i.to_le_bytes());
        p.push(b'j');
        p.extend(i.to_le_bytes());
        p.push(b'l');
        p.push(b'r');
        p.extend((i + 1).to_le_bytes());
    }
    p.push(b'.');
    let r = quick("memo bomb", || dec(p));
    assert!(matches!(r, Err(Error::Limit { .. })), "{r:?}");

    // The same with a long string: few nodes, but many copies of the text.
    let mut p = b"\x80\x04\x8d".to_vec();
    p.extend((1u64 << 20).to_le_bytes());
    p.extend(vec![b'x'; 1 << 20]);
    p.extend(b"\x94](");
    for _ in 0..10_000 {
        p.extend(b"h\x00");
    }
    p.extend(b"e.");
    let r = quick("string bomb", || dec(p));
    assert!(matches!(r, Err(Error::Limit { .. })), "{r:?}");
}

/// Cycles through the memo (a list containing itself, an object whose
/// state holds itself) cannot be a tree: refused, not looped on.
#[test]
fn cycles() {
    assert!(matches!(
        dec(b"]q\x00h\x00a.".to_vec()),
        Err(Error::Limit { .. })
    ));
    assert!(matches!(
        dec(b"}q\x00K\x01h\x00s.".to_vec()),
        Err(Error::Limit { .. })
    ));
    assert!(matches!(
        dec(b"\x80\x02cm\nC\n)\x81q\x00h\x00b.".to_vec()),
        Err(Error::Limit { .. })
    ));
}

/// A 2 MiB block decodes without copying: the bytes are a slice of the
/// input.
#[test]
fn big_binbytes_is_zero_copy() {
    let n = 2 << 20;
    let mut p = b"\x80\x03B".to_vec();
    p.extend((n as u32).to_le_bytes());
    p.extend((0..n).map(|i| i as u8));
    p.extend(b"q\x00.");
    let buf = Bytes::from(p);
    let (v, end) = quick("2 MiB", || pickle::decode(&buf, 0).unwrap());
    assert_eq!(end, buf.len());
    let b = v.as_bytes().unwrap();
    assert_eq!(b.len(), n);
    assert_eq!(b.as_ptr(), buf[7..].as_ptr(), "bytes were copied");
    // Python 2 str too.
    let mut p = b"\x80\x02T".to_vec();
    p.extend((n as u32).to_le_bytes());
    p.extend(vec![7u8; n]);
    p.push(b'.');
    let buf = Bytes::from(p);
    let (v, _) = pickle::decode(&buf, 0).unwrap();
    assert_eq!(v.as_bytes().unwrap().as_ptr(), buf[7..].as_ptr());
}
