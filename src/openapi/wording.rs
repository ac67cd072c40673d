//! Short English for each kind of schema failure, in the contract's style
//! (`/email is required`, `must be at most 100`).
//!
//! Written here rather than taken from `jsonschema`'s own text: that text quotes the
//! offending value, which may be megabytes of a client's body, and it changes between
//! releases. Nothing here echoes a request value; a pointer (which holds the client's
//! property names) is clipped to [`MAX_POINTER`] bytes.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;

use super::document::escape_pointer;

/// Longest pointer echoed in a message or `errors[].pointer`.
pub(crate) const MAX_POINTER: usize = 200;
/// Longest schema text quoted (an `enum` list, a `pattern`).
const MAX_QUOTE: usize = 100;

/// One failure: the JSON pointer of the failing value and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) pointer: String,
    pub(crate) message: String,
}

/// The failures one validation error stands for (an `additionalProperties` error is one
/// failure per unexpected property, each at its own pointer).
pub(crate) fn failures(error: &ValidationError<'_>) -> Vec<Failure> {
    let at = error.instance_path().as_str();
    let one = |message: String| {
        vec![Failure {
            pointer: clip(at, MAX_POINTER),
            message,
        }]
    };
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map_or_else(|| property.to_string(), str::to_string);
            vec![Failure {
                pointer: clip(&format!("{at}/{}", escape_pointer(&name)), MAX_POINTER),
                message: "is required".into(),
            }]
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|name| Failure {
                pointer: clip(&format!("{at}/{}", escape_pointer(name)), MAX_POINTER),
                message: "is not allowed".into(),
            })
            .collect(),
        // `additionalProperties: false` without `properties`: jsonschema reports the object
        // (not the member) with a false-schema error
        ValidationErrorKind::FalseSchema if error.schema_path().as_str().ends_with("/additionalProperties") => {
            one("must have no properties".into())
        }
        kind => one(describe(kind)),
    }
}

/// The message for one kind of failure.
pub(crate) fn describe(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as K;
    match kind {
        K::Type { kind } => format!("must be {}", type_words(kind)),
        K::Enum { options } => format!("must be one of: {}", list(options)),
        K::Constant { expected_value } => format!("must be {}", clip(&expected_value.to_string(), MAX_QUOTE)),
        K::Pattern { pattern } => format!("must match the pattern {}", clip(pattern, MAX_QUOTE)),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::MultipleOf { multiple_of } => format!("must be a multiple of {multiple_of}"),
        K::MinLength { limit } => format!("must be at least {limit} characters long"),
        K::MaxLength { limit } => format!("must be at most {limit} characters long"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        K::UniqueItems => "must not contain duplicate items".into(),
        K::Format { format } => format!("must be a valid {}", clip(format, MAX_QUOTE)),
        K::AnyOf { .. } | K::OneOfNotValid { .. } => "must match one of the allowed schemas".into(),
        K::OneOfMultipleValid { .. } => "must match exactly one of the allowed schemas".into(),
        K::Not { .. } => "must not match the excluded schema".into(),
        K::Contains => "must contain a matching item".into(),
        K::PropertyNames { .. } => "has a property name that is not allowed".into(),
        K::AdditionalItems { .. } | K::UnevaluatedItems { .. } => "has more items than allowed".into(),
        K::AdditionalProperties { .. } | K::UnevaluatedProperties { .. } | K::FalseSchema => "is not allowed".into(),
        K::Required { .. } => "is required".into(),
        K::ContentEncoding { content_encoding } => format!("must be valid {}", clip(content_encoding, MAX_QUOTE)),
        K::ContentMediaType { content_media_type } => format!("must be valid {}", clip(content_media_type, MAX_QUOTE)),
        K::FromUtf8 { .. } => "must be valid UTF-8".into(),
        // fail closed: what cannot be checked is refused
        K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            "could not be checked against its pattern".into()
        }
        K::Referencing(_) => "could not be checked (a schema reference does not resolve)".into(),
        K::Custom { message, .. } => clip(message, MAX_QUOTE),
    }
}

/// `a string`, `an integer`, `a string or null`.
fn type_words(kind: &TypeKind) -> String {
    let names: Vec<&str> = match kind {
        TypeKind::Single(t) => vec![t.as_str()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
    };
    // `a string or null` reads better than `null or a string`
    let (nulls, others): (Vec<&str>, Vec<&str>) = names.into_iter().partition(|n| *n == "null");
    let words: Vec<String> = others
        .iter()
        .chain(&nulls)
        .map(|n| match *n {
            "null" => "null".to_string(),
            "array" | "integer" | "object" => format!("an {n}"),
            other => format!("a {other}"),
        })
        .collect();
    words.join(" or ")
}

/// An `enum` list as compact JSON, clipped.
fn list(options: &Value) -> String {
    let text = match options {
        Value::Array(items) => items.iter().map(Value::to_string).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    };
    clip(&text, MAX_QUOTE)
}

/// At most `max` bytes of `s`, cut on a character boundary, with `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn first(schema: Value, instance: Value) -> Vec<Failure> {
        let v = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<_> = v.iter_errors(&instance).collect();
        assert!(!errors.is_empty(), "expected a failure");
        failures(&errors[0])
    }

    fn msg(schema: Value, instance: Value) -> (String, String) {
        let f = first(schema, instance).remove(0);
        (f.pointer, f.message)
    }

    fn pm(pointer: &str, message: &str) -> (String, String) {
        (pointer.to_string(), message.to_string())
    }

    #[test]
    fn each_kind_has_its_words() {
        let obj = |p: Value| json!({"type": "object", "properties": {"a": p}});
        assert_eq!(
            msg(json!({"required": ["email"]}), json!({})),
            pm("/email", "is required")
        );
        assert_eq!(
            msg(obj(json!({"required": ["a/b"]})), json!({"a": {}})),
            pm("/a/a~1b", "is required")
        );
        assert_eq!(
            msg(obj(json!({"type": "string"})), json!({"a": 1})),
            pm("/a", "must be a string")
        );
        assert_eq!(
            msg(json!({"type": "integer"}), json!("x")),
            pm("", "must be an integer")
        );
        assert_eq!(
            msg(json!({"type": ["string", "null"]}), json!(1)),
            pm("", "must be a string or null")
        );
        assert_eq!(
            msg(json!({"enum": ["en", "es"]}), json!("de")),
            pm("", "must be one of: \"en\", \"es\"")
        );
        assert_eq!(msg(json!({"const": 1}), json!(2)), pm("", "must be 1"));
        assert_eq!(
            msg(json!({"pattern": "^a+$"}), json!("b")),
            pm("", "must match the pattern ^a+$")
        );
        assert_eq!(msg(json!({"minimum": 1}), json!(0)), pm("", "must be at least 1"));
        assert_eq!(msg(json!({"maximum": 100}), json!(101)), pm("", "must be at most 100"));
        assert_eq!(
            msg(json!({"exclusiveMinimum": 0}), json!(0)),
            pm("", "must be greater than 0")
        );
        assert_eq!(
            msg(json!({"exclusiveMaximum": 1.5}), json!(2)),
            pm("", "must be less than 1.5")
        );
        assert_eq!(
            msg(json!({"multipleOf": 2}), json!(3)),
            pm("", "must be a multiple of 2")
        );
    }

    #[test]
    fn sizes_formats_and_combinators() {
        assert_eq!(
            msg(json!({"minLength": 2}), json!("a")),
            pm("", "must be at least 2 characters long")
        );
        assert_eq!(
            msg(json!({"maxLength": 1}), json!("ab")),
            pm("", "must be at most 1 characters long")
        );
        assert_eq!(
            msg(json!({"minItems": 1}), json!([])),
            pm("", "must have at least 1 items")
        );
        assert_eq!(
            msg(json!({"maxItems": 0}), json!([1])),
            pm("", "must have at most 0 items")
        );
        assert_eq!(
            msg(json!({"uniqueItems": true}), json!([1, 1])),
            pm("", "must not contain duplicate items")
        );
        assert_eq!(
            msg(json!({"format": "email"}), json!("x")),
            pm("", "must be a valid email")
        );
        assert_eq!(
            msg(json!({"format": "uuid"}), json!("x")),
            pm("", "must be a valid uuid")
        );
        assert_eq!(
            msg(json!({"format": "date-time"}), json!("x")),
            pm("", "must be a valid date-time")
        );
        assert_eq!(
            msg(json!({"anyOf": [{"type": "string"}, {"type": "array"}]}), json!(1)),
            pm("", "must match one of the allowed schemas")
        );
        assert_eq!(
            msg(json!({"oneOf": [{}, {}]}), json!(1)),
            pm("", "must match exactly one of the allowed schemas")
        );
        assert_eq!(
            msg(json!({"not": {}}), json!(1)),
            pm("", "must not match the excluded schema")
        );
        assert_eq!(
            msg(json!({"contains": {"type": "string"}}), json!([1])),
            pm("", "must contain a matching item")
        );
        assert_eq!(msg(json!(false), json!(1)), pm("", "is not allowed"));
    }

    #[test]
    fn additional_properties_are_one_failure_each() {
        let f = first(
            json!({"properties": {"a": {}}, "additionalProperties": false}),
            json!({"a": 1, "b": 2, "c/d": 3}),
        );
        let got: Vec<(String, String)> = f.into_iter().map(|f| (f.pointer, f.message)).collect();
        assert_eq!(got, vec![pm("/b", "is not allowed"), pm("/c~1d", "is not allowed")]);
        let f = first(json!({"additionalProperties": false}), json!({"a": 1, "b": 2}));
        let got: Vec<(String, String)> = f.into_iter().map(|f| (f.pointer, f.message)).collect();
        assert_eq!(got, vec![pm("", "must have no properties")]);
        let f = first(json!({"properties": {"x": false}}), json!({"x": 1}));
        assert_eq!((f[0].pointer.as_str(), f[0].message.as_str()), ("/x", "is not allowed"));
    }

    #[test]
    fn nothing_huge_is_echoed() {
        let long_key = "k".repeat(10_000);
        let f = first(
            json!({"properties": {"a": {}}, "additionalProperties": false}),
            json!({ long_key.clone(): 1 }),
        );
        assert_eq!(f[0].pointer, format!("/{}…", "k".repeat(MAX_POINTER - 1)));
        let long_value = "v".repeat(10_000);
        let (_, m) = msg(json!({"maxLength": 3}), json!(long_value));
        assert_eq!(m, "must be at most 3 characters long");
        let many: Vec<String> = (0..100).map(|i| format!("option-{i}")).collect();
        let (_, m) = msg(json!({"enum": many}), json!("x"));
        assert!(m.len() < 130 && m.ends_with('…'), "{m}");
    }

    #[test]
    fn clip_cuts_on_char_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("ééé", 3), "é…");
    }
}
