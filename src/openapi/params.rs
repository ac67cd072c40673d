//! Path, query and header parameters: `required`, and `schema` on the value as the upstream
//! will read it.
//!
//! Parameter values arrive as text; the schema describes the value after the upstream's
//! framework converts it. So a value is coerced before the schema sees it: to a number when
//! the schema's `type` allows `integer`/`number` and the text is a JSON number, to a boolean
//! for `true`/`false` when it allows `boolean`, else it stays a string (and a schema that
//! wants a number then says `must be an integer`). Headers are coerced the same way (the
//! contract names path and query; a header typed `integer` could never pass otherwise).
//!
//! Arrays: a query array is the repeated name (`?tag=a&tag=b`, `form` + `explode`, the
//! default) or one comma list (`explode: false`); path and header arrays are comma lists.
//! A scalar query parameter or header given more than once is refused: frameworks disagree
//! on which one counts (Express makes it an array), so the gateway would be checking a value
//! the upstream may not use. Object-typed parameters, parameters described by `content`
//! instead of `schema`, and the other serialization styles (`matrix`, `label`,
//! `spaceDelimited`, `pipeDelimited`, `deepObject`) are checked for presence only: the
//! gateway does not parse them, and guessing would refuse values the upstream accepts.

use http::HeaderMap;
use jsonschema::Validator;
use serde_json::Value;

use super::query;
use super::rejection::{Collector, Location};
use super::schema::SchemaCompiler;
use super::spec::{ParamIn, RawParam};
use super::wording;

/// Header parameters OpenAPI says are described elsewhere and to be ignored.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

/// How text becomes the value the schema checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Coerce {
    number: bool,
    boolean: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Scalar(Coerce),
    Array {
        items: Coerce,
        explode: bool,
    },
    /// `type: object` or no schema: presence only.
    Presence,
}

/// One compiled parameter check.
#[derive(Debug)]
pub(crate) struct ParamCheck {
    pub(crate) name: String,
    pub(crate) location: ParamIn,
    required: bool,
    shape: Shape,
    validator: Option<Validator>,
}

impl ParamCheck {
    /// Builds the check; `Err` is a message for the parameter's schema. Cookie parameters
    /// and the headers OpenAPI says to ignore yield `Ok(None)`.
    pub(crate) fn compile(raw: &RawParam, schemas: &SchemaCompiler) -> Result<Option<ParamCheck>, String> {
        if raw.location == ParamIn::Cookie
            || (raw.location == ParamIn::Header && IGNORED_HEADERS.contains(&raw.name.to_ascii_lowercase().as_str()))
        {
            return Ok(None);
        }
        let plain_style = raw.style.as_deref().is_none_or(|s| s == "form" || s == "simple");
        let shape = match &raw.schema {
            Some(s) if plain_style => shape(s, schemas, raw),
            _ => Shape::Presence,
        };
        let validator = match (&raw.schema, shape) {
            (Some(schema), Shape::Scalar(_) | Shape::Array { .. }) => Some(schemas.build(schema)?.0),
            _ => None,
        };
        let name = if raw.location == ParamIn::Header {
            raw.name.to_ascii_lowercase()
        } else {
            raw.name.clone()
        };
        Ok(Some(ParamCheck {
            name,
            location: raw.location,
            required: raw.required,
            shape,
            validator,
        }))
    }

    fn location(&self) -> Location {
        match self.location {
            ParamIn::Path => Location::Path,
            ParamIn::Query => Location::Query,
            ParamIn::Header | ParamIn::Cookie => Location::Header,
        }
    }

    /// Checks the raw values found for this parameter (path: the capture; query: every
    /// occurrence, decoded; header: every field value).
    pub(crate) fn check(&self, raw: &[&[u8]], out: &mut Collector) {
        let location = self.location();
        let Some(first) = raw.first() else {
            if self.required {
                out.push(location, &self.name, "is required");
            }
            return;
        };
        let value = match self.shape {
            Shape::Presence => return,
            Shape::Scalar(_) if raw.len() > 1 => {
                out.push(location, &self.name, "must be given once");
                return;
            }
            Shape::Scalar(c) => text(first).map(|t| coerce(t, c)),
            Shape::Array { items, explode } => self.array(raw, items, explode),
        };
        let value = match value {
            Ok(v) => v,
            Err(message) => {
                out.push(location, &self.name, message);
                return;
            }
        };
        if let Some(v) = &self.validator {
            if !v.is_valid(&value) {
                for e in v.iter_errors(&value) {
                    for f in wording::failures(&e) {
                        out.push(location, &self.name, f.message);
                    }
                }
            }
        }
    }

    fn array(&self, raw: &[&[u8]], items: Coerce, explode: bool) -> Result<Value, &'static str> {
        let mut values = Vec::new();
        let split = !(explode && self.location == ParamIn::Query);
        for r in raw {
            let t = text(r)?;
            if split {
                values.extend(t.split(',').map(|part| coerce(part.trim_matches([' ', '\t']), items)));
            } else {
                values.push(coerce(t, items));
            }
        }
        Ok(Value::Array(values))
    }
}

fn text(raw: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(raw).map_err(|_| "must be valid UTF-8")
}

/// The schema's shape, its `$ref`s followed.
fn shape(schema: &Value, schemas: &SchemaCompiler, raw: &RawParam) -> Shape {
    let Some(schema) = schemas.resolve(schema) else {
        return Shape::Scalar(Coerce::default());
    };
    let types = types_of(schema);
    if types.iter().any(|t| t == "object") {
        return Shape::Presence;
    }
    if types.iter().any(|t| t == "array") {
        let items = schema.get("items").and_then(|i| schemas.resolve(i));
        return Shape::Array {
            items: items.map_or_else(Coerce::default, |i| coercion(&types_of(i))),
            explode: raw.explode,
        };
    }
    Shape::Scalar(coercion(&types))
}

fn types_of(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn coercion(types: &[String]) -> Coerce {
    Coerce {
        number: types.iter().any(|t| t == "integer" || t == "number"),
        boolean: types.iter().any(|t| t == "boolean"),
    }
}

/// Text to the value the schema checks. A number must be JSON number syntax (no spaces,
/// no `inf`, `NaN`, `0x10` or `+1`), as the upstream's validators would also refuse.
fn coerce(text: &str, c: Coerce) -> Value {
    if c.number && looks_numeric(text) {
        if let Ok(n) = serde_json::from_str::<serde_json::Number>(text) {
            return Value::Number(n);
        }
    }
    if c.boolean && (text == "true" || text == "false") {
        return Value::Bool(text == "true");
    }
    Value::String(text.to_string())
}

fn looks_numeric(text: &str) -> bool {
    text.bytes().next().is_some_and(|b| b == b'-' || b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
}

/// The field values of a header, for a header parameter.
pub(crate) fn header_values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h [u8]> {
    headers.get_all(name).iter().map(|v| v.as_bytes()).collect()
}

/// The decoded values of a query parameter, every occurrence.
pub(crate) fn query_values(query: Option<&[u8]>, name: &str) -> Vec<Vec<u8>> {
    let Some(q) = query else { return Vec::new() };
    query::pairs(q)
        .filter(|(n, _)| n.as_ref() == name.as_bytes())
        .map(|(_, v)| v.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value, location: ParamIn, required: bool, explode: bool, raw: &[&str]) -> Vec<(String, String)> {
        let raw_param = RawParam {
            name: "limit".into(),
            location,
            required,
            schema: Some(schema),
            explode,
            style: None,
            pointer: String::new(),
        };
        let schemas =
            SchemaCompiler::new(&json!({"components": {"schemas": {"Limit": {"type": "integer", "maximum": 100}}}}));
        let c = ParamCheck::compile(&raw_param, &schemas).unwrap().unwrap();
        let mut out = Collector::default();
        let bytes: Vec<&[u8]> = raw.iter().map(|s| s.as_bytes()).collect();
        c.check(&bytes, &mut out);
        match out.finish() {
            Ok(()) => vec![],
            Err(r) => r.errors.into_iter().map(|e| (e.pointer, e.message)).collect(),
        }
    }

    fn q(schema: Value, raw: &[&str]) -> Vec<(String, String)> {
        check(schema, ParamIn::Query, false, true, raw)
    }

    fn e(m: &str) -> Vec<(String, String)> {
        vec![("limit".to_string(), m.to_string())]
    }

    #[test]
    fn numbers_are_coerced() {
        let s = json!({"type": "integer", "minimum": 1, "maximum": 100});
        assert_eq!(q(s.clone(), &["10"]), vec![]);
        assert_eq!(q(s.clone(), &["500"]), e("must be at most 100"));
        assert_eq!(q(s.clone(), &["0"]), e("must be at least 1"));
        assert_eq!(q(s.clone(), &["abc"]), e("must be an integer"));
        assert_eq!(q(s.clone(), &["1.5"]), e("must be an integer"));
        for bad in ["", " 5", "5 ", "0x10", "+1", "inf", "NaN", "1e999", "--1"] {
            assert_eq!(q(s.clone(), &[bad]), e("must be an integer"), "{bad:?}");
        }
        assert_eq!(q(json!({"type": "number"}), &["1.5e2"]), vec![]);
        assert_eq!(
            q(json!({"$ref": "#/components/schemas/Limit"}), &["101"]),
            e("must be at most 100")
        );
    }

    #[test]
    fn booleans_strings_enums_patterns_formats() {
        assert_eq!(q(json!({"type": "boolean"}), &["true"]), vec![]);
        assert_eq!(q(json!({"type": "boolean"}), &["yes"]), e("must be a boolean"));
        assert_eq!(
            q(json!({"type": "string", "enum": ["asc", "desc"]}), &["up"]),
            e("must be one of: \"asc\", \"desc\"")
        );
        assert_eq!(
            q(json!({"type": "string", "pattern": "^[a-z]+$"}), &["A"]),
            e("must match the pattern ^[a-z]+$")
        );
        assert_eq!(
            q(json!({"type": "string", "minLength": 2}), &["a"]),
            e("must be at least 2 characters long")
        );
        assert_eq!(
            q(json!({"type": "string", "maxLength": 2}), &["abc"]),
            e("must be at most 2 characters long")
        );
        assert_eq!(
            q(json!({"type": "string", "format": "uuid"}), &["x"]),
            e("must be a valid uuid")
        );
        assert_eq!(q(json!({"type": "string", "format": "email"}), &["a@b.co"]), vec![]);
        assert_eq!(
            q(json!({"type": "string", "format": "date-time"}), &["yesterday"]),
            e("must be a valid date-time")
        );
        // a string-typed parameter keeps "10" a string
        assert_eq!(
            q(json!({"type": "string", "maxLength": 1}), &["10"]),
            e("must be at most 1 characters long")
        );
    }

    #[test]
    fn presence_and_repetition() {
        let s = json!({"type": "integer"});
        assert_eq!(check(s.clone(), ParamIn::Query, true, true, &[]), e("is required"));
        assert_eq!(q(s.clone(), &[]), vec![]);
        assert_eq!(q(s.clone(), &["1", "2"]), e("must be given once"));
        assert_eq!(q(json!({"type": "object"}), &["x", "y"]), vec![]);
        assert_eq!(
            check(json!({"type": "string"}), ParamIn::Path, true, false, &["\u{e9}"]),
            vec![]
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        let raw_param = RawParam {
            name: "id".into(),
            location: ParamIn::Path,
            required: true,
            schema: Some(json!({"type": "string"})),
            explode: false,
            style: None,
            pointer: String::new(),
        };
        let c = ParamCheck::compile(&raw_param, &SchemaCompiler::new(&json!({})))
            .unwrap()
            .unwrap();
        let mut out = Collector::default();
        c.check(&[&[0xff][..]], &mut out);
        assert_eq!(
            out.finish().unwrap_err().message,
            "Invalid path parameter id: must be valid UTF-8"
        );
    }

    #[test]
    fn arrays() {
        let s = json!({"type": "array", "items": {"type": "integer", "maximum": 5}, "maxItems": 3});
        assert_eq!(q(s.clone(), &["1", "2"]), vec![]);
        assert_eq!(q(s.clone(), &["1", "9"]), e("must be at most 5"));
        assert_eq!(q(s.clone(), &["1", "2", "3", "4"]), e("must have at most 3 items"));
        assert_eq!(check(s.clone(), ParamIn::Query, false, false, &["1,2, 3"]), vec![]);
        assert_eq!(
            check(s.clone(), ParamIn::Query, false, false, &["1,x"]),
            e("must be an integer")
        );
        assert_eq!(check(s.clone(), ParamIn::Header, false, false, &["1, 2", "3"]), vec![]);
    }

    #[test]
    fn other_styles_are_presence_only() {
        let raw_param = RawParam {
            name: "ids".into(),
            location: ParamIn::Query,
            required: true,
            schema: Some(json!({"type": "array", "items": {"type": "integer"}})),
            explode: false,
            style: Some("pipeDelimited".into()),
            pointer: String::new(),
        };
        let c = ParamCheck::compile(&raw_param, &SchemaCompiler::new(&json!({})))
            .unwrap()
            .unwrap();
        let mut out = Collector::default();
        c.check(&[b"1|2"], &mut out);
        assert!(out.finish().is_ok());
        let mut out = Collector::default();
        c.check(&[], &mut out);
        assert_eq!(
            out.finish().unwrap_err().message,
            "Invalid query parameter ids: is required"
        );
    }

    #[test]
    fn cookies_and_reserved_headers_are_not_checked() {
        let mut raw_param = RawParam {
            name: "Content-Type".into(),
            location: ParamIn::Header,
            required: true,
            schema: None,
            explode: false,
            style: None,
            pointer: String::new(),
        };
        let schemas = SchemaCompiler::new(&json!({}));
        assert!(ParamCheck::compile(&raw_param, &schemas).unwrap().is_none());
        raw_param.location = ParamIn::Cookie;
        raw_param.name = "session".into();
        assert!(ParamCheck::compile(&raw_param, &schemas).unwrap().is_none());
    }

    #[test]
    fn value_sources() {
        let mut h = HeaderMap::new();
        h.append("x-trace", "a".parse().unwrap());
        h.append("X-Trace", "b".parse().unwrap());
        assert_eq!(header_values(&h, "x-trace"), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(
            query_values(Some(b"limit=1&x=2&limit=%33"), "limit"),
            vec![b"1".to_vec(), b"3".to_vec()]
        );
        assert_eq!(query_values(None, "limit"), Vec::<Vec<u8>>::new());
    }
}
