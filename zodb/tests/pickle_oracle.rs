//! The pickle decoder against Python's own unpickler, on a corpus pickled
//! by Python with every protocol (0–5): see `python/pickle_oracle/gen.py`.

#[path = "pickle_common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{oracle, render, unhex};
use zodb::pickle;

/// Every corpus pickle decodes to what Python's unpickler makes of it, and
/// the returned end is just after STOP.
#[test]
fn pickle_matches_python_oracle() {
    let lines = oracle("corpus");
    assert!(
        lines.len() > 300,
        "oracle corpus too small: {}",
        lines.len()
    );
    let mut failures = Vec::new();
    let mut protos = [0usize; 6];
    for line in &lines {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "bad oracle line {line:.100}");
        let (name, proto, data, want) = (f[1], f[2], unhex(f[3]), f[4]);
        protos[proto.parse::<usize>().unwrap()] += 1;
        let buf = Bytes::from(data);
        let got = match pickle::decode(&buf, 0) {
            Ok((v, end)) => {
                if end != buf.len() {
                    failures.push(format!("{name} p{proto}: end {end} != {}", buf.len()));
                }
                render(&v, &mut Vec::new())
            }
            Err(e) => {
                if want != "ERR" {
                    failures.push(format!("{name} p{proto}: error {e}"));
                }
                "ERR".into()
            }
        };
        if got != want {
            failures.push(format!(
                "{name} p{proto}:\n  got  {got:.300}\n  want {want:.300}"
            ));
        }
    }
    assert!(
        protos.iter().all(|&n| n > 50),
        "protocol coverage {protos:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Two pickles back to back (as in a ZODB record): `start` and the returned
/// end chain them.
#[test]
fn pickle_back_to_back() {
    let lines = oracle("corpus");
    let mut all = Vec::new();
    let mut wants = Vec::new();
    for line in lines.iter().step_by(7).take(40) {
        let f: Vec<&str> = line.split('\t').collect();
        if f[4] == "ERR" {
            continue;
        }
        all.extend(unhex(f[3]));
        wants.push(f[4].to_owned());
    }
    let buf = Bytes::from(all);
    let mut pos = 0;
    for want in wants {
        let (v, end) = pickle::decode(&buf, pos).expect("decode");
        assert_eq!(render(&v, &mut Vec::new()), want);
        pos = end;
    }
    assert_eq!(pos, buf.len());
}
