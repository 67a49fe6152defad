//! Pickles that Python 3 does not write, crafted byte by byte: Python 2's
//! `str` opcodes and protocol-0 forms, `INST`/`OBJ`, text memo opcodes, and
//! the conversions and refusals documented in `zodb::pickle`.

use bytes::Bytes;
use zodb::pickle::{self, Error, Value};

fn d(b: &[u8]) -> Result<Value, Error> {
    let buf = Bytes::copy_from_slice(b);
    let (v, end) = pickle::decode(&buf, 0)?;
    assert_eq!(end, b.len(), "end after STOP");
    Ok(v)
}

fn by(b: &[u8]) -> Value {
    Value::Bytes(Bytes::copy_from_slice(b))
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

fn g(m: &str, n: &str) -> Value {
    Value::Global {
        module: m.into(),
        name: n.into(),
    }
}

#[test]
fn py2_protocol0_dict_of_str() {
    let p = b"(dp0\nS'key'\np1\nS'va\\x00l\\'ue\\n'\np2\nsS\"it's\"\np3\nI01\nsS'f'\nI00\nsS'l'\nL12345678901234567890L\nsS'i'\nI-7\nsS'u'\nVcaf\\u00e9 \\U0001f600\np4\ns.";
    let want = Value::Dict(vec![
        (by(b"key"), by(b"va\x00l'ue\n")),
        (by(b"it's"), Value::Bool(true)),
        (by(b"f"), Value::Bool(false)),
        // 12345678901234567890 = 0xab54a98ceb1f0ad2: needs a 9th byte.
        (
            by(b"l"),
            Value::BigInt(vec![0xd2, 0x0a, 0x1f, 0xeb, 0x8c, 0xa9, 0x54, 0xab, 0x00]),
        ),
        (by(b"i"), Value::Int(-7)),
        (by(b"u"), s("café 😀")),
    ]);
    assert_eq!(d(p).unwrap(), want);
}

#[test]
fn py2_string_escapes() {
    assert_eq!(
        d(b"S'\\a\\b\\f\\v\\t\\r\\0\\12\\777\\q\\\\'\n.").unwrap(),
        by(b"\x07\x08\x0c\x0b\t\r\x00\n\xff\\q\\")
    );
    assert_eq!(d(b"S'\xe9\xff'\n.").unwrap(), by(b"\xe9\xff"));
    for bad in [
        &b"S'abc\n."[..],
        b"Sabc\n.",
        b"S'\n.",
        b"S'a\\'\n.",
        b"S'\\x4'\n.",
        b"S'\\xzz'\n.",
    ] {
        assert!(d(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn py2_protocol1_binstring() {
    // }q\0 ( U\3key q\1 T\5\0\0\0hello q\2 U\1n K\x05 u .
    let p = b"}q\x00(U\x03keyq\x01T\x05\x00\x00\x00helloq\x02U\x01nK\x05u.";
    assert_eq!(
        d(p).unwrap(),
        Value::Dict(vec![(by(b"key"), by(b"hello")), (by(b"n"), Value::Int(5))])
    );
    // BINSTRING with a negative length is corrupt, not a huge allocation.
    assert!(d(b"T\xff\xff\xff\xff.").is_err());
}

#[test]
fn py2_protocol2() {
    // A ZODB-style (class, None) tuple, then a LONG1 and a tuple of str.
    let p = b"\x80\x02c__main__\nC\nq\x01N\x86.";
    assert_eq!(
        d(p).unwrap(),
        Value::Tuple(vec![g("__main__", "C"), Value::None])
    );
    let p = b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.";
    assert_eq!(
        d(p).unwrap(),
        Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0])
    );
    // A non-minimal LONG1 that fits i64 is an Int.
    assert_eq!(
        d(b"\x80\x02\x8a\x0a\xfe\xff\xff\xff\xff\xff\xff\xff\xff\xff.").unwrap(),
        Value::Int(-2)
    );
    assert_eq!(d(b"\x80\x02\x8a\x00.").unwrap(), Value::Int(0));
    let p = b"\x80\x02U\x02abq\x00h\x00\x86q\x01.";
    assert_eq!(d(p).unwrap(), Value::Tuple(vec![by(b"ab"), by(b"ab")]));
}

#[test]
fn inst_and_obj() {
    let p = b"(I1\nS'x'\ni__main__\nOld\np0\n(dp1\nS'a'\nI1\nsb.";
    assert_eq!(
        d(p).unwrap(),
        Value::Build {
            obj: Box::new(Value::Reduce {
                callable: Box::new(g("__main__", "Old")),
                args: Box::new(Value::Tuple(vec![Value::Int(1), by(b"x")])),
            }),
            state: Box::new(Value::Dict(vec![(by(b"a"), Value::Int(1))])),
        }
    );
    let p = b"(c__main__\nOld\nI1\no.";
    assert_eq!(
        d(p).unwrap(),
        Value::Reduce {
            callable: Box::new(g("__main__", "Old")),
            args: Box::new(Value::Tuple(vec![Value::Int(1)])),
        }
    );
    assert!(d(b"(o.").is_err());
}

/// A memoized object built later is seen built through the memo, as in
/// Python where BUILD mutates the object.
#[test]
fn build_seen_through_memo() {
    // L = []; memo 0. obj = C() appended to L; memo 1. BUILD obj with
    // {'a': 1} after it is in the list, POP it, then return L via the memo.
    let v = d(b"\x80\x02]q\x00c__main__\nC\n)\x81q\x01ah\x01}U\x01aK\x01sb0h\x00.").unwrap();
    let built = Value::Build {
        obj: Box::new(Value::NewObj {
            cls: Box::new(g("__main__", "C")),
            args: Box::new(Value::Tuple(vec![])),
            kwargs: None,
        }),
        state: Box::new(Value::Dict(vec![(by(b"a"), Value::Int(1))])),
    };
    assert_eq!(v, Value::List(vec![built]));
}

#[test]
fn text_memo_and_persid() {
    let p = b"(lp0\nI1\na(lp1\ng0\nag0\na.";
    let inner = Value::List(vec![Value::Int(1)]);
    assert_eq!(d(p).unwrap(), Value::List(vec![inner.clone(), inner]));
    assert_eq!(
        d(b"Pabc\n.").unwrap(),
        Value::PersistentId(Box::new(s("abc")))
    );
    assert!(d(b"P\xe9\n.").is_err());
    assert!(d(b"g0\n.").is_err(), "GET of an unknown key");
    assert!(d(b"p-1\n.").is_err());
}

#[test]
fn py3_bytes_at_low_protocols() {
    let enc = |e: &str, txt: &str| {
        let mut p = b"\x80\x02c_codecs\nencode\nX".to_vec();
        p.extend((txt.len() as u32).to_le_bytes());
        p.extend(txt.as_bytes());
        p.push(b'X');
        p.extend((e.len() as u32).to_le_bytes());
        p.extend(e.as_bytes());
        p.extend(b"\x86R.");
        d(&p)
    };
    for e in [
        "latin1",
        "latin-1",
        "iso-8859-1",
        "ISO_8859-1",
        "L1",
        "iso8859-1",
        "latin_1",
    ] {
        assert_eq!(enc(e, "é\u{0}ÿa").unwrap(), by(b"\xe9\x00\xffa"), "{e}");
    }
    assert!(enc("latin1", "Ā").is_err(), "U+0100 is not latin-1");
    assert!(matches!(enc("utf-8", "é").unwrap(), Value::Reduce { .. }));
    assert_eq!(d(b"c__builtin__\nbytes\n(tR.").unwrap(), by(b""));
    assert_eq!(d(b"\x80\x02cbuiltins\nbytes\n)R.").unwrap(), by(b""));
}

#[test]
fn text_forms() {
    assert_eq!(d(b"F1.5e+300\n.").unwrap(), Value::Float(1.5e300));
    assert_eq!(d(b"F-inf\n.").unwrap(), Value::Float(f64::NEG_INFINITY));
    assert!(d(b"Fx\n.").is_err());
    assert_eq!(d(b"L-1L\n.").unwrap(), Value::Int(-1));
    assert_eq!(d(b"I0\n.").unwrap(), Value::Int(0));
    assert!(d(b"I\n.").is_err());
    assert!(d(b"I012\n.").is_err());
    assert!(d(b"I1x\n.").is_err());
    assert_eq!(d(b"V\\\\u0041\n.").unwrap(), s("\\\\u0041"));
    assert_eq!(d(b"V\\\\\\u0041\n.").unwrap(), s("\\\\A"));
    assert!(d(b"V\\u00\n.").is_err());
    assert!(d(b"V\\U00110000\n.").is_err());
    assert!(d(b"X\x02\x00\x00\x00\xed\xa0.").is_err(), "bad UTF-8");
}

#[test]
fn sets_and_stack_ops() {
    assert_eq!(
        d(b"\x80\x04\x8f(K\x01K\x02\x90.").unwrap(),
        Value::Set(vec![Value::Int(1), Value::Int(2)])
    );
    assert_eq!(
        d(b"\x80\x04(K\x01\x91.").unwrap(),
        Value::FrozenSet(vec![Value::Int(1)])
    );
    // POP with nothing above the mark drops the mark; POP_MARK; DUP.
    assert_eq!(d(b"K\x01(0.").unwrap(), Value::Int(1));
    assert_eq!(d(b"K\x01(K\x02K\x031.").unwrap(), Value::Int(1));
    assert_eq!(
        d(b"K\x012\x86.").unwrap(),
        Value::Tuple(vec![Value::Int(1), Value::Int(1)])
    );
    // Nothing may pop below a mark.
    assert!(d(b"]K\x01(a.").is_err());
    assert!(d(b"(.").is_err());
    assert!(d(b"K\x01(\x85.").is_err());
    // STACK_GLOBAL needs two str.
    assert_eq!(d(b"\x80\x04\x8c\x01m\x8c\x01n\x93.").unwrap(), g("m", "n"));
    assert!(d(b"\x80\x04K\x01\x8c\x01n\x93.").is_err());
    // NEWOBJ_EX
    assert_eq!(
        d(b"\x80\x04\x8c\x01m\x8c\x01n\x93)}\x92.").unwrap(),
        Value::NewObj {
            cls: Box::new(g("m", "n")),
            args: Box::new(Value::Tuple(vec![])),
            kwargs: Some(Box::new(Value::Dict(vec![]))),
        }
    );
    assert!(d(b"\x80\x04\x8c\x01m\x8c\x01n\x93)]\x92.").is_err());
    // Odd items for a dict.
    assert!(d(b"(K\x01d.").is_err());
    assert!(d(b"}(K\x01u.").is_err());
}

#[test]
fn refusals() {
    assert!(matches!(
        d(b"\x80\x02\x82\x01."),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        d(b"\x80\x02\x83\x01\x00."),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        d(b"\x80\x02\x84\x01\x00\x00\x00."),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        d(b"\x80\x05\x97."),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        d(b"\x80\x05]\x98."),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(d(b"\x80\x06N."), Err(Error::Invalid { .. })));
    assert!(matches!(
        d(b"\xffN."),
        Err(Error::BadOpcode { op: 0xff, .. })
    ));
    // Appending to something that is not a list: Python would call methods.
    assert!(matches!(d(b")K\x01a."), Err(Error::Unsupported { .. })));
    assert!(matches!(
        d(b"](K\x01K\x02u."),
        Err(Error::Unsupported { .. })
    ));
    // ... but an empty APPENDS does not look at its target, as in Python.
    assert_eq!(d(b")(e.").unwrap(), Value::Tuple(vec![]));
    assert!(matches!(d(b""), Err(Error::Truncated { .. })));
    assert!(matches!(
        pickle::decode(&Bytes::from_static(b"N."), 3),
        Err(Error::Truncated { .. })
    ));
}
