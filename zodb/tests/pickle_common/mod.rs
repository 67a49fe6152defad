//! Shared by the pickle and serialize tests: finding the Python oracle and
//! rendering a `Value` in the canonical text form that
//! `python/pickle_oracle/gen.py` renders on the Python side.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
pub use testkit::python;
use zodb::pickle::Value;

/// Runs `python/pickle_oracle/gen.py <mode>` and returns its output lines.
pub fn oracle(mode: &str) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python/pickle_oracle/gen.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(mode)
        .output()
        .expect("running the Python oracle");
    assert!(
        out.status.success(),
        "oracle {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("oracle output is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() & 1 == 0, "odd hex");
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decimal text of a little-endian two's complement integer.
pub fn bigint_decimal(le: &[u8]) -> String {
    let neg = le.last().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = le.to_vec();
    if neg {
        let mut carry = 1u16;
        for b in mag.iter_mut() {
            let v = u16::from(!*b) + carry;
            *b = v as u8;
            carry = v >> 8;
        }
    }
    // Repeated division by 10, most significant byte first.
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut().rev() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if neg {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap()
}

/// The canonical rendering (see gen.py). `pids` collects every persistent
/// id met, in rendering order.
pub fn render(v: &Value, pids: &mut Vec<Value>) -> String {
    let mut r = |x: &Value| render(x, pids);
    match v {
        Value::None => "N".into(),
        Value::Bool(true) => "T".into(),
        Value::Bool(false) => "F".into(),
        Value::Int(i) => format!("i{i}"),
        Value::BigInt(b) => format!("i{}", bigint_decimal(b)),
        Value::Float(f) => format!("f{:016x}", f.to_bits()),
        Value::Bytes(b) => format!("b{}", hex(b)),
        Value::Str(s) => format!("s{}", hex(s.as_bytes())),
        Value::Tuple(t) => format!("({})", t.iter().map(r).collect::<Vec<_>>().join(",")),
        Value::List(t) => format!("[{}]", t.iter().map(r).collect::<Vec<_>>().join(",")),
        Value::Dict(d) => {
            let items: Vec<String> = d
                .iter()
                .map(|(k, x)| format!("{}:{}", r(k), r(x)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Set(s) | Value::FrozenSet(s) => {
            let mut items: Vec<String> = s.iter().map(r).collect();
            items.sort();
            let tag = if matches!(v, Value::Set(_)) { "S" } else { "Z" };
            format!("{tag}{{{}}}", items.join(","))
        }
        Value::Global { module, name } => format!("g{module}.{name}"),
        Value::PersistentId(p) => {
            pids.push((**p).clone());
            format!("P({})", render(p, pids))
        }
        Value::Reduce { callable, args } => format!("R({},{})", r(callable), r(args)),
        Value::NewObj { cls, args, kwargs } => {
            let kw = match kwargs {
                Some(k) => r(k),
                None => "-".into(),
            };
            format!("N({},{},{kw})", r(cls), r(args))
        }
        Value::Build { obj, state } => format!("B({},{})", r(obj), r(state)),
    }
}
