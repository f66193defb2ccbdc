//! Hostile input for property tests: mutations of real JSON bodies.
//!
//! Every parser that reads input from outside the process (extender
//! requests, the snapshot ConfigMap, AdmissionReviews, provider bodies, the
//! runtime overrides) is fed recorded real bodies that [`mutated_json`]
//! damages: a value replaced by one of the wrong type or out of range, a key
//! removed, an array element repeated, the text truncated, bytes flipped,
//! deep nesting inserted. The properties the tests check are the same
//! everywhere: no panic, an error that names what was wrong, and allocation
//! bounded by the size of the input.
//!
//! The number of cases is small by default so `make test` stays fast;
//! `PROPTEST_CASES` (which `make soak` sets) raises it for every property.

use std::alloc::System;
use std::sync::{Mutex, MutexGuard};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;
pub use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// Environment variable proptest reads for the number of cases.
pub const CASES_ENV: &str = "PROPTEST_CASES";

/// A proptest configuration with `default_cases` cases unless
/// `PROPTEST_CASES` is set, and no failure files written into the source
/// tree: a defect found is pinned as a named regression test instead.
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var(CASES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Serializes the tests of one test binary that measure allocation: the
/// counters of the instrumented allocator are process-wide, so every test in
/// such a binary holds this guard for its whole run.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` and returns its result with the bytes allocated meanwhile (the
/// total of every allocation, not the net growth: an upper bound on the
/// peak). The test binary must install the allocator:
/// `#[global_allocator] static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;`
/// and hold [`serial`].
pub fn allocated_by<R>(alloc: &'static StatsAlloc<System>, f: impl FnOnce() -> R) -> (R, usize) {
    let region = stats_alloc::Region::new(alloc);
    let r = f();
    let bytes = region.change().bytes_allocated;
    (r, bytes)
}

/// Opening brackets nested `depth` deep around `inner`: `[[[…inner…]]]`.
pub fn nested(depth: usize, inner: &str) -> String {
    let mut s = String::with_capacity(depth * 2 + inner.len());
    s.extend(std::iter::repeat_n('[', depth));
    s.push_str(inner);
    s.extend(std::iter::repeat_n(']', depth));
    s
}

/// JSON pointers of every value inside `v` (the root is `""`).
pub fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        out.push(at.to_owned());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    walk(child, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// A value of the wrong type, out of range, or otherwise hostile.
pub fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(0.0),
            Just(-1.0),
            Just(-0.0),
            Just(1e308),
            Just(-1e308),
            Just(f64::MIN_POSITIVE),
            Just(1e-300),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just(String::new()),
            Just("NaN".to_owned()),
            Just("-1".to_owned()),
            Just("1e999".to_owned()),
            Just("2024-13-45T99:99:99Z".to_owned()),
            Just("9999999-01-01T00:00:00Z".to_owned()),
            Just("2022-02-03T21:00:00+00:00/P99999D".to_owned()),
            Just("ünïcödé 区域 🌍\u{0}\u{1f}\"\\".to_owned()),
            Just("x".repeat(10_000)),
            ".{0,40}",
        ]
        .prop_map(Value::from),
        Just(Value::Array(Vec::new())),
        Just(Value::Object(serde_json::Map::new())),
        (1usize..40).prop_map(|d| { serde_json::from_str(&nested(d, "1")).unwrap_or(Value::Null) }),
    ]
}

/// One structural mutation of a JSON document.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// The value at the pointer becomes `Value`.
    Replace(usize, Value),
    /// The value at the pointer is removed from its object or array.
    Remove(usize),
    /// The array at the pointer gets its first element repeated this often.
    Repeat(usize, usize),
}

fn apply(doc: &mut Value, ptrs: &[String], m: &Mutation) {
    let ptr = |i: usize| ptrs.get(i % ptrs.len().max(1)).cloned().unwrap_or_default();
    match m {
        Mutation::Replace(i, v) => {
            if let Some(slot) = doc.pointer_mut(&ptr(*i)) {
                *slot = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let p = ptr(*i);
            let Some((parent, last)) = p.rsplit_once('/') else {
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&last);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < a.len()
                    {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
        Mutation::Repeat(i, n) => {
            if let Some(Value::Array(a)) = doc.pointer_mut(&ptr(*i))
                && let Some(first) = a.first().cloned()
            {
                a.extend(std::iter::repeat_n(first, *n));
            }
        }
    }
}

/// A structural mutation with pointer indices in `0..n_pointers`.
pub fn mutation(n_pointers: usize) -> impl Strategy<Value = Mutation> {
    let n = n_pointers.max(1);
    prop_oneof![
        3 => (0..n, hostile_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => (0..n).prop_map(Mutation::Remove),
        1 => (0..n, 1usize..200).prop_map(|(i, k)| Mutation::Repeat(i, k)),
    ]
}

/// A byte-level mutation of serialized text.
#[derive(Clone, Debug)]
pub enum ByteMutation {
    /// Keep only the first fraction (per mille) of the bytes.
    Truncate(u16),
    /// Overwrite the byte at the position (per mille) with the byte.
    Flip(u16, u8),
    /// Insert the bytes at the position (per mille).
    Insert(u16, Vec<u8>),
}

fn at(len: usize, per_mille: u16) -> usize {
    len.saturating_mul(usize::from(per_mille.min(1000))) / 1000
}

fn apply_bytes(bytes: &mut Vec<u8>, m: &ByteMutation) {
    match m {
        ByteMutation::Truncate(p) => bytes.truncate(at(bytes.len(), *p)),
        ByteMutation::Flip(p, b) => {
            let i = at(bytes.len(), *p);
            if let Some(slot) = bytes.get_mut(i) {
                *slot = *b;
            }
        }
        ByteMutation::Insert(p, ins) => {
            let i = at(bytes.len(), *p).min(bytes.len());
            bytes.splice(i..i, ins.iter().copied());
        }
    }
}

/// A byte-level mutation.
pub fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        (0u16..1000).prop_map(ByteMutation::Truncate),
        (0u16..1000, any::<u8>()).prop_map(|(p, b)| ByteMutation::Flip(p, b)),
        (
            0u16..1000,
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..16),
                Just(b"{\"".to_vec()),
                Just(b"]".to_vec()),
                Just(b",".to_vec()),
                (1usize..3000).prop_map(|d| nested(d, "").into_bytes()),
            ]
        )
            .prop_map(|(p, v)| ByteMutation::Insert(p, v)),
    ]
}

/// What was done to a seed: for the failure report.
#[derive(Clone, Debug)]
pub struct Mutated {
    /// The structural mutations, in order.
    pub mutations: Vec<Mutation>,
    /// The byte mutations applied to the serialized text afterwards.
    pub bytes: Vec<ByteMutation>,
    /// The resulting text.
    pub text: Vec<u8>,
}

/// Damaged versions of `seed`: one to four structural mutations, then (half
/// the time) up to two byte-level ones.
pub fn mutated_json(seed: Value) -> impl Strategy<Value = Mutated> {
    let ptrs = pointers(&seed);
    let n = ptrs.len();
    (
        proptest::collection::vec(mutation(n), 1..5),
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(byte_mutation(), 1..3)
        ],
    )
        .prop_map(move |(mutations, bytes)| {
            let mut doc = seed.clone();
            for m in &mutations {
                apply(&mut doc, &ptrs, m);
            }
            let mut text = serde_json::to_vec(&doc).unwrap_or_default();
            for b in &bytes {
                apply_bytes(&mut text, b);
            }
            Mutated {
                mutations,
                bytes,
                text,
            }
        })
}

/// `seed` with one value at a pointer replaced by a hostile one, and
/// nothing else changed: for "one bad field never spoils the rest".
pub fn one_field_replaced(seed: Value) -> impl Strategy<Value = (String, Value)> {
    let ptrs = pointers(&seed);
    let n = ptrs.len().max(1);
    (0..n, hostile_value()).prop_map(move |(i, v)| {
        let p = ptrs.get(i).cloned().unwrap_or_default();
        let mut doc = seed.clone();
        if let Some(slot) = doc.pointer_mut(&p) {
            *slot = v;
        }
        (p, doc)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_reach_every_value() {
        let v: Value = serde_json::json!({"a": [1, {"b/c": 2}], "d~": null});
        let p = pointers(&v);
        assert_eq!(p, ["", "/a", "/a/0", "/a/1", "/a/1/b~1c", "/d~0"]);
        for ptr in &p {
            assert!(v.pointer(ptr).is_some(), "{ptr}");
        }
    }

    #[test]
    fn mutations_change_the_document() {
        let v: Value = serde_json::json!({"a": [1, 2], "b": "x"});
        let ptrs = pointers(&v);
        let mut d = v.clone();
        apply(&mut d, &ptrs, &Mutation::Remove(4));
        assert_eq!(d, serde_json::json!({"a": [1, 2]}));
        let mut d = v.clone();
        apply(&mut d, &ptrs, &Mutation::Repeat(1, 2));
        assert_eq!(d["a"], serde_json::json!([1, 2, 1, 1]));
        let mut b = b"abcd".to_vec();
        apply_bytes(&mut b, &ByteMutation::Truncate(500));
        assert_eq!(b, b"ab");
        assert_eq!(nested(2, "x"), "[[x]]");
    }
}
