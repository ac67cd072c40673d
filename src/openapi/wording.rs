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
/// Longest schema text quoted (an `enum` value, a `pattern`).
pub(crate) const MAX_QUOTE: usize = 100;
/// Values of an `enum` named before "and N more": a list of 100,000 values is never
/// rendered whole, once per failing value.
const ENUM_SHOWN: usize = 5;
/// Marks a failure carried through a delegated reference as a custom error's message
/// (see [`relative`]).
const RELATIVE: char = '\u{0}';

/// One failure: the JSON pointer of the failing value and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) pointer: String,
    pub(crate) message: String,
}

/// A failure found behind a delegated `$ref` (a shared component's own validator), as the
/// message of the custom error that carries it out: its pointer relative to the reference,
/// then its words. [`failures`] reads it back under the reference's own pointer.
pub(crate) fn relative(f: &Failure) -> String {
    format!("{RELATIVE}{}{RELATIVE}{}", f.pointer, f.message)
}

/// The failures one validation error stands for (an `additionalProperties` error is one
/// failure per unexpected property, each at its own pointer), at most
/// [`super::rejection::MAX_ERRORS`].
pub(crate) fn failures(error: &ValidationError<'_>) -> Vec<Failure> {
    let at = error.instance_path().as_str();
    if let ValidationErrorKind::Custom { message, .. } = error.kind() {
        if let Some((pointer, message)) = message.strip_prefix(RELATIVE).and_then(|m| m.split_once(RELATIVE)) {
            return vec![Failure {
                pointer: clip(&format!("{at}{pointer}"), MAX_POINTER),
                message: message.to_string(),
            }];
        }
    }
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
            .take(super::rejection::MAX_ERRORS)
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
        // the gateway's own keywords' words (enum, budgeted patterns), bounded where built
        K::Custom { message, .. } => clip(message, 6 * MAX_QUOTE),
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

/// An `enum` list as compact JSON: the first few values, each clipped, then how many more.
/// Never renders the whole list (nor a whole long value).
pub(crate) fn list(options: &Value) -> String {
    let Value::Array(items) = options else {
        return clip(&options.to_string(), MAX_QUOTE);
    };
    let shown: Vec<String> = items.iter().take(ENUM_SHOWN).map(quote).collect();
    match items.len().saturating_sub(ENUM_SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// One value as compact JSON, at most [`MAX_QUOTE`] bytes; a large array or object is
/// rendered only up to there.
fn quote(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => {
            let mut w = Clipped(String::new());
            // the writer stops taking text past the limit; the error it then returns is ours
            let _ = serde_json::to_writer(&mut w, value);
            clip(&w.0, MAX_QUOTE)
        }
        other => clip(&other.to_string(), MAX_QUOTE),
    }
}

/// A writer that keeps the first `MAX_QUOTE + 1` bytes and then refuses more.
struct Clipped(String);

impl std::io::Write for Clipped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() > MAX_QUOTE {
            return Err(std::io::Error::other("clipped"));
        }
        self.0.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        let many: Vec<String> = (0..100_000).map(|i| format!("option-{i}")).collect();
        let (_, m) = msg(json!({"enum": many}), json!("x"));
        assert_eq!(
            m,
            "must be one of: \"option-0\", \"option-1\", \"option-2\", \"option-3\", \"option-4\" and 99995 more"
        );
        let (_, m) = msg(
            json!({"enum": [1, "v".repeat(500), {"k": "w".repeat(500)}]}),
            json!("x"),
        );
        assert!(m.len() < 2 * MAX_QUOTE + 60 && m.contains('…'), "{m}");
    }

    #[test]
    fn failures_behind_a_delegated_reference_keep_their_pointer() {
        let carried = relative(&Failure {
            pointer: "/b/0".into(),
            message: "is required".into(),
        });
        let schema = json!({"properties": {"a": {"x-carried": true}}});
        let v = jsonschema::options()
            .with_keyword("x-carried", move |_: &serde_json::Map<String, Value>, _: &Value, _| {
                Ok(Box::new(Carry(carried.clone())) as Box<dyn for<'i> jsonschema::Keyword<'i>>)
            })
            .build(&schema)
            .unwrap();
        let instance = json!({"a": {}});
        let errors: Vec<_> = v.iter_errors(&instance).collect();
        let f = failures(&errors[0]);
        assert_eq!(
            (f[0].pointer.as_str(), f[0].message.as_str()),
            ("/a/b/0", "is required")
        );
    }

    struct Carry(String);

    impl<'i> jsonschema::Keyword<'i> for Carry {
        fn validate(&self, _: &'i Value) -> Result<(), ValidationError<'i>> {
            Err(ValidationError::custom(self.0.clone()))
        }

        fn is_valid(&self, _: &'i Value) -> bool {
            false
        }
    }

    #[test]
    fn clip_cuts_on_char_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("ééé", 3), "é…");
    }
}
