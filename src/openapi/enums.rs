//! `enum`, checked in constant time per value however long the list (docs/reference.md, the
//! OpenAPI section: "cost bounds").
//!
//! `jsonschema` hashes an `enum` only when every value is a string (or every one an integer);
//! any other list is compared value by value, so a 100,000-value list mixing strings and
//! numbers costs 100,000 comparisons per value of a body, and a 64 KiB body holds thousands
//! of values. Every validator therefore takes `enum` from here: a short list is compared
//! value by value; a longer one is a set of canonical texts (numbers by value, `1` and `1.0`
//! alike, as JSON Schema compares them; object members in key order), so each check hashes
//! the value once.

use std::collections::HashSet;

use jsonschema::paths::Location;
use jsonschema::{Keyword, ValidationError};
use serde_json::{Map, Value};

use super::wording;

/// Up to this many values, an `enum` is compared value by value.
const LINEAR: usize = 16;

enum Options {
    Few(Vec<Value>),
    /// Strings by their text (no copy per check), every other value by its canonical text.
    Many {
        strings: HashSet<String>,
        others: HashSet<String>,
    },
}

struct Enum {
    options: Options,
    /// The failure's words, built once (the first values and how many more).
    message: String,
}

impl Enum {
    fn holds(&self, value: &Value) -> bool {
        match &self.options {
            Options::Few(values) => values.iter().any(|v| equal(v, value)),
            Options::Many { strings, others } => match value {
                Value::String(s) => strings.contains(s),
                other => others.contains(&canonical(other)),
            },
        }
    }
}

impl<'i> Keyword<'i> for Enum {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.holds(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(self.message.clone()))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.holds(instance)
    }
}

/// The factory `jsonschema` calls for each `enum` of every validator.
pub(crate) fn enum_keyword<'a>(
    _parent: &'a Map<String, Value>,
    value: &'a Value,
    _at: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let Value::Array(values) = value else {
        return Err(ValidationError::custom("`enum` must be a list"));
    };
    let options = if values.len() <= LINEAR {
        Options::Few(values.clone())
    } else {
        let strings = values.iter().filter_map(Value::as_str).map(str::to_string).collect();
        let others = values.iter().filter(|v| !v.is_string()).map(canonical).collect();
        Options::Many { strings, others }
    };
    Ok(Box::new(Enum {
        options,
        message: format!("must be one of: {}", wording::list(value)),
    }))
}

/// JSON Schema's equality: numbers by value, arrays item by item, objects member by member.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_text(x) == number_text(y),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// A text equal for exactly the values JSON Schema calls equal.
fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => out.push_str(&number_text(n)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A number's value as text: integers (and floats with no fraction, within 2^127) as
/// digits, other floats in exponent form.
fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 1.7e38 {
        return (f as i128).to_string();
    }
    format!("{f:e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn keyword(values: Value) -> Box<dyn for<'i> Keyword<'i>> {
        let map = Map::new();
        enum_keyword(&map, &values, Location::new()).unwrap()
    }

    #[test]
    fn equality_is_json_schemas() {
        for (a, b) in [
            (json!(1), json!(1.0)),
            (json!(-0.0), json!(0)),
            (json!(1e2), json!(100)),
            (json!([1, {"a": 2.0}]), json!([1.0, {"a": 2}])),
            (json!({"a": 1, "b": 2}), json!({"b": 2, "a": 1})),
        ] {
            assert!(equal(&a, &b), "{a} {b}");
            assert_eq!(canonical(&a), canonical(&b), "{a} {b}");
        }
        for (a, b) in [
            (json!(1), json!("1")),
            (json!(1.5), json!(1)),
            (json!([1]), json!([1, 1])),
            (json!(null), json!(false)),
        ] {
            assert!(!equal(&a, &b), "{a} {b}");
            assert_ne!(canonical(&a), canonical(&b), "{a} {b}");
        }
    }

    #[test]
    fn short_and_long_lists_answer_alike() {
        let mixed: Vec<Value> = (0..100)
            .map(|i| if i % 2 == 0 { json!(format!("v{i}")) } else { json!(i) })
            .collect();
        for values in [json!(mixed[..10].to_vec()), json!(mixed)] {
            let k = keyword(values);
            assert!(k.is_valid(&json!("v0")));
            assert!(k.is_valid(&json!(1.0)));
            assert!(!k.is_valid(&json!("v1")));
            assert!(!k.is_valid(&json!(2)));
            assert!(!k.is_valid(&json!({"v0": 1})));
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(|n| json!(n)),
            (-3i64..3).prop_map(|n| json!(n as f64)),
            Just(json!(0.5)),
            "[ab\"\\\\]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[ab]", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Short and long lists answer as jsonschema's own `enum` does.
        #[test]
        fn answers_as_jsonschema_does(values in proptest::collection::vec(arb_value(), 1..40), probe in arb_value()) {
            let list = Value::Array(values);
            let theirs = jsonschema::validator_for(&json!({"enum": list})).unwrap();
            let ours = keyword(list);
            prop_assert_eq!(ours.is_valid(&probe), theirs.is_valid(&probe), "{}", probe);
        }
    }

    #[test]
    fn the_failure_names_the_first_values() {
        let many: Vec<Value> = (0..100_000).map(|i| json!(i)).collect();
        let k = keyword(json!(many));
        let miss = json!(-1);
        let e = k.validate(&miss).unwrap_err();
        assert_eq!(e.to_string(), "must be one of: 0, 1, 2, 3, 4 and 99995 more");
    }
}
