//! ZODB records against ZODB itself: records written by ZODB's own
//! `ObjectWriter` into FileStorages (persistent objects, mappings, BTrees,
//! weak and cross-database references), and every documented class
//! description and reference form pickled with protocols 1–3; see
//! `python/pickle_oracle/gen.py` (mode `zodb`, run with the venv python).

#[path = "pickle_common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{oracle, render, unhex};
use zodb::pickle::Value;
use zodb::serialize::{self, decode_record, persistent_ref, ClassName, Error, PersistentRef};
use zodb::Oid;

fn ref_text(r: &PersistentRef) -> String {
    format!(
        "{}/{}/{}/{}",
        r.oid,
        r.class.as_ref().map_or("-".into(), |c| c.to_string()),
        r.database.as_deref().unwrap_or("-"),
        u8::from(r.weak)
    )
}

#[test]
fn zodb_records_match_python() {
    let lines = oracle("zodb");
    assert!(lines.len() > 200, "too few records: {}", lines.len());
    let mut failures = Vec::new();
    let mut shared_memo = 0;
    for line in &lines {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 6, "bad oracle line {line:.100}");
        let (name, data, class, state, refs) = (f[1], Bytes::from(unhex(f[2])), f[3], f[4], f[5]);
        let rec = match decode_record(&data) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        // Records whose state needs the class pickle's memo.
        if serialize::decode_class(&data).is_ok() {
            let (_, end) = zodb::pickle::decode(&data, 0).unwrap();
            if zodb::pickle::decode(&data, end).is_err() {
                shared_memo += 1;
            }
        }
        if rec.class.to_string() != class {
            failures.push(format!("{name}: class {} != {class}", rec.class));
        }
        let mut pids = Vec::new();
        let got = render(&rec.state, &mut pids);
        if got != state {
            failures.push(format!("{name}:\n  got  {got:.300}\n  want {state:.300}"));
        }
        let got_refs: Vec<String> = pids
            .iter()
            .map(|p| persistent_ref(p).map_or_else(|e| format!("ERR {e}"), |r| ref_text(&r)))
            .collect();
        let got_refs = if got_refs.is_empty() {
            "-".to_string()
        } else {
            got_refs.join(" ")
        };
        if got_refs != refs {
            failures.push(format!("{name}: refs\n  got  {got_refs}\n  want {refs}"));
        }
        // Every strict prefix of a record is an error, and so is garbage
        // after it.
        for cut in 0..data.len() {
            assert!(
                decode_record(&data.slice(..cut)).is_err(),
                "{name}: prefix {cut}"
            );
        }
        let mut longer = data.to_vec();
        longer.push(b'N');
        assert_eq!(
            decode_record(&Bytes::from(longer)),
            Err(Error::Trailing(1)),
            "{name}"
        );
    }
    assert!(
        shared_memo > 10,
        "the corpus should exercise the shared memo ({shared_memo})"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn oid8() -> Value {
    Value::Bytes(Bytes::from_static(b"\x00\x00\x00\x00\x00\x00\x01\x02"))
}

fn cls(m: &str, n: &str) -> ClassName {
    ClassName {
        module: m.into(),
        name: n.into(),
    }
}

/// Class descriptions as Python 2 wrote them (`str` names: bytes) and the
/// forms that must be refused.
#[test]
fn class_description_forms() {
    let rec = |meta: &[u8]| {
        let mut d = meta.to_vec();
        d.extend(b"}.");
        decode_record(&Bytes::from(d))
    };
    let c = |r: Result<serialize::Record, Error>| r.map(|r| r.class);
    assert_eq!(c(rec(b"cmod\nC\n.")), Ok(cls("mod", "C")));
    assert_eq!(c(rec(b"(cmod\nC\nN\x86.")), Ok(cls("mod", "C")));
    assert_eq!(c(rec(b"(cmod\nC\n(K\x01tt.")), Ok(cls("mod", "C")));
    assert_eq!(c(rec(b"((U\x03modU\x01Ctq\x01Nt.")), Ok(cls("mod", "C")));
    assert_eq!(
        c(rec(b"\x80\x02U\x03modU\x01C\x86)\x86.")),
        Ok(cls("mod", "C"))
    );
    assert_eq!(
        c(rec(
            b"\x80\x02X\x03\x00\x00\x00modX\x01\x00\x00\x00C\x86N\x86."
        )),
        Ok(cls("mod", "C"))
    );
    for bad in [
        &b"N."[..],
        b"K\x01.",
        b"(cmod\nC\nK\x01\x86.",       // args neither None nor tuple
        b"(cmod\nC\nN)\x87.",          // 3-tuple
        b"\x80\x02U\x03mod\x85N\x86.", // (module,) only
        b"\x80\x02U\x03modK\x01\x86N\x86.",
        b"\x80\x02U\x08\x00\x00\x00\x00\x00\x00\x00\x01Q.", // persistent class
        b"\x80\x02U\x08\x00\x00\x00\x00\x00\x00\x00\x01QN\x86.",
        b"\x80\x02U\x02\xff\xfeU\x01C\x86N\x86.", // non-UTF-8 name
    ] {
        assert!(
            matches!(rec(bad), Err(Error::BadClass(_))),
            "{bad:x?}: {:?}",
            rec(bad)
        );
    }
    // The state pickle must be there, complete, and alone.
    assert!(matches!(
        decode_record(&Bytes::from_static(b"cmod\nC\n.")),
        Err(Error::Pickle(_))
    ));
    assert!(matches!(
        decode_record(&Bytes::from_static(b"cmod\nC\n.}.N.")),
        Err(Error::Trailing(2))
    ));
}

/// Every documented reference form, with bytes and text spellings, and the
/// malformed ones.
#[test]
fn persistent_ref_forms() {
    let oid = Oid::new(0x102);
    let s = |x: &str| Value::Str(x.into());
    let b = |x: &[u8]| Value::Bytes(Bytes::copy_from_slice(x));
    let tup = Value::Tuple;
    let list = Value::List;
    let g = Value::Global {
        module: "m".into(),
        name: "C".into(),
    };
    let r = |class: Option<ClassName>, db: Option<&str>, weak| PersistentRef {
        oid,
        class,
        database: db.map(str::to_owned),
        weak,
    };
    let ok = [
        (oid8(), r(None, None, false)),
        (s("\x00\x00\x00\x00\x00\x00\x01\x02"), r(None, None, false)),
        (
            tup(vec![oid8(), g.clone()]),
            r(Some(cls("m", "C")), None, false),
        ),
        (
            tup(vec![oid8(), tup(vec![b(b"m"), s("C")])]),
            r(Some(cls("m", "C")), None, false),
        ),
        (tup(vec![oid8(), Value::None]), r(None, None, false)),
        (list(vec![s("w"), tup(vec![oid8()])]), r(None, None, true)),
        (
            list(vec![b(b"w"), tup(vec![oid8(), b(b"db")])]),
            r(None, Some("db"), true),
        ),
        (
            list(vec![s("n"), tup(vec![s("db"), oid8()])]),
            r(None, Some("db"), false),
        ),
        (
            list(vec![s("m"), tup(vec![s("db"), oid8(), g.clone()])]),
            r(Some(cls("m", "C")), Some("db"), false),
        ),
        (
            list(vec![
                s("m"),
                tup(vec![s("db"), oid8(), tup(vec![s("m"), s("C")])]),
            ]),
            r(Some(cls("m", "C")), Some("db"), false),
        ),
        (list(vec![oid8()]), r(None, None, true)),
    ];
    for (pid, want) in ok {
        assert_eq!(persistent_ref(&pid), Ok(want), "{pid:?}");
    }
    let bad = [
        b(b"1234567"),
        b(b"123456789"),
        s("\u{e9}\x00\x00\x00\x00\x00\x01"),
        Value::Int(5),
        Value::None,
        tup(vec![oid8()]),
        tup(vec![oid8(), g.clone(), Value::None]),
        tup(vec![oid8(), Value::Int(1)]),
        tup(vec![oid8(), tup(vec![s("m")])]),
        list(vec![]),
        list(vec![s("x"), tup(vec![oid8()])]),
        list(vec![s("w"), tup(vec![])]),
        list(vec![s("w"), Value::Int(1)]),
        list(vec![s("n"), tup(vec![oid8()])]),
        list(vec![s("n"), tup(vec![Value::Int(1), oid8()])]),
        list(vec![s("m"), tup(vec![s("db"), oid8()])]),
        list(vec![Value::Int(1), tup(vec![oid8()])]),
        list(vec![oid8(), oid8(), oid8()]),
        list(vec![b(b"short")]),
    ];
    for pid in bad {
        assert!(
            matches!(persistent_ref(&pid), Err(Error::BadRef(_))),
            "{pid:?}"
        );
    }
}
