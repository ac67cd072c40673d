//! `application/x-www-form-urlencoded` bodies, read as the upstream's form parser reads them
//! and checked against the operation's schema (docs/reference.md, the OpenAPI section:
//! bodies).
//!
//! The body is the query syntax ([`super::query`]): `&`-separated pairs, `+` a space, `%XX`
//! a byte. Each top-level property of the schema is a field, read by its type and the media
//! type's OpenAPI `encoding` for it, with the query parameters' rules
//! ([`super::params`]): a scalar is given once by its plain name (a repeated name or a bracket
//! suffix is refused); an array is the repeated name, `name[]` or `name[N]` (or one list with
//! `explode: false`, split by its style); an object is `name[member]=value` as qs reads it
//! (or `k,v` pairs with `explode: false`); a field whose `contentType` is JSON is JSON text.
//! Values are text converted by the types the schema allows. A name the schema does not
//! declare is kept as text (a list when repeated or given as `name[]`, an object for
//! `name[key]`), so `additionalProperties` sees it.

use serde_json::{Map, Value};

use super::media::{essence, is_json};
use super::params::{self, Split};
use super::query::{self, Occurrence};
use super::rejection::{Collector, Location};
use super::schema::SchemaCheck;
use super::schema::SchemaCompiler;
use super::types::{self, Types};
use super::wording::{clip, MAX_POINTER};

/// How one declared field is read.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    Scalar(Types),
    Array { items: Types, split: Split },
    Object { members: Vec<(String, Types)>, pairs: bool },
    Json,
}

/// The compiled check of a form body.
#[derive(Debug)]
pub(crate) struct FormCheck {
    fields: Vec<(String, Read)>,
    check: SchemaCheck,
}

impl FormCheck {
    /// The fields of `schema` (its declared properties) read as `encoding` says.
    pub(crate) fn new(
        schema: &serde_json::Value,
        encoding: Option<&Value>,
        schemas: &SchemaCompiler,
        check: SchemaCheck,
    ) -> FormCheck {
        let fields = types::parts(schema, schemas, "properties")
            .into_iter()
            .filter_map(Value::as_object)
            .flat_map(|props| props.iter())
            .map(|(name, sub)| (name.clone(), read_of(sub, encoding.and_then(|e| e.get(name)), schemas)))
            .fold(Vec::new(), |mut out: Vec<(String, Read)>, (name, read)| {
                if !out.iter().any(|(n, _)| *n == name) {
                    out.push((name, read));
                }
                out
            });
        FormCheck { fields, check }
    }

    /// The schema check of the object the body reads as.
    pub(crate) fn schema(&self) -> &SchemaCheck {
        &self.check
    }

    /// The body as the JSON object its schema checks; a field that cannot be read is a
    /// failure at its pointer (and the object is not checked).
    pub(crate) fn read(&self, body: &[u8], out: &mut Collector) -> Option<Value> {
        let mut object = Map::new();
        for (name, found) in query::grouped(body) {
            let name = String::from_utf8_lossy(&name).into_owned();
            let read = self.fields.iter().find(|(n, _)| *n == name).map(|(_, r)| r);
            let value = match read {
                Some(read) => read_field(&found, read),
                None => Ok(undeclared(&found)),
            };
            match value {
                Ok(v) => {
                    object.insert(name, v);
                }
                Err(message) => {
                    let pointer = format!("/{}", super::document::escape_pointer(&name));
                    out.push(Location::Body, clip(&pointer, MAX_POINTER), message);
                }
            }
        }
        out.is_empty().then_some(Value::Object(object))
    }
}

/// How a property is read: its `encoding` first (`contentType`, `style`, `explode`), then its
/// type.
fn read_of(schema: &Value, encoding: Option<&Value>, schemas: &SchemaCompiler) -> Read {
    let get = |k: &str| encoding.and_then(|e| e.get(k));
    let json = get("contentType").and_then(Value::as_str).is_some_and(|ct| {
        ct.split(',')
            .any(|m| essence(m.as_bytes()).is_some_and(|(k, s)| is_json(&k, &s)))
    });
    if json {
        return Read::Json;
    }
    let style = get("style").and_then(Value::as_str).unwrap_or("form");
    let explode = get("explode").and_then(Value::as_bool).unwrap_or(style == "form");
    let t = types::types_of(schema, schemas);
    if t.array() && !t.is_any() && !t.object() {
        let split = match (style, explode) {
            (_, true) => Split::Repeated,
            ("spaceDelimited", false) => Split::On(b' '),
            ("pipeDelimited", false) => Split::On(b'|'),
            _ => Split::On(b','),
        };
        return Read::Array {
            items: types::item_types(schema, schemas),
            split,
        };
    }
    if t.object() && !t.is_any() && !t.array() {
        return Read::Object {
            members: types::property_types(schema, schemas),
            pairs: style == "form" && !explode,
        };
    }
    Read::Scalar(t)
}

fn read_field(found: &[Occurrence<'_>], read: &Read) -> Result<Value, String> {
    match read {
        Read::Scalar(t) => params::scalar(found, *t),
        Read::Array { items, split } => params::array(found, *items, *split),
        Read::Object { members, pairs: false } => params::deep_object(members, found),
        Read::Object { members, pairs: true } => params::pairs(params::only_plain(found)?, members, b',', false),
        Read::Json => params::json_text(params::only_plain(found)?),
    }
}

/// A name the schema does not declare, as qs would read it: text, a list of texts
/// (repeated, `name[]`, `name[N]`), or an object of texts (`name[key]`).
fn undeclared(found: &[Occurrence<'_>]) -> Value {
    let text = |o: &Occurrence<'_>| Value::String(String::from_utf8_lossy(&o.value).into_owned());
    match found {
        [one] if one.path.is_empty() => text(one),
        _ if found
            .iter()
            .all(|o| o.path.len() == 1 && !o.path[0].is_empty() && !o.path[0].iter().all(u8::is_ascii_digit)) =>
        {
            let members = found
                .iter()
                .map(|o| (String::from_utf8_lossy(&o.path[0]).into_owned(), text(o)))
                .collect();
            Value::Object(members)
        }
        _ => Value::Array(found.iter().map(text).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::schema::Patterns;
    use serde_json::json;

    fn form(schema: Value, encoding: Option<Value>) -> FormCheck {
        let schemas = SchemaCompiler::new(&json!({"components": {"schemas": {
            "Age": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]}
        }}}))
        .unwrap();
        let check = schemas.build(&schema, Patterns::Linear).unwrap();
        FormCheck::new(&schema, encoding.as_ref(), &schemas, check)
    }

    /// The object read, or the failures.
    fn read(f: &FormCheck, body: &str) -> Result<Value, Vec<(String, String)>> {
        let mut out = Collector::default();
        match f.read(body.as_bytes(), &mut out) {
            Some(v) => Ok(v),
            None => Err(out
                .finish()
                .unwrap_err()
                .errors
                .into_iter()
                .map(|e| (e.pointer, e.message))
                .collect()),
        }
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "email": {"type": "string"},
            "age": {"$ref": "#/components/schemas/Age"},
            "admin": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "integer"}},
            "address": {"type": "object", "properties": {"zip": {"type": "integer"}}},
            "meta": {"type": "object"}
        }})
    }

    #[test]
    fn fields_are_read_by_their_types() {
        let f = form(schema(), None);
        assert_eq!(
            read(
                &f,
                "email=a%40b.co&age=42&admin=true&tags=1&tags[]=2&tags[2]=3&address[zip]=01000&x=y"
            ),
            Ok(
                json!({"email": "a@b.co", "age": 42, "admin": true, "tags": [1, 2, 3], "address": {"zip": 1000}, "x": "y"})
            )
        );
        assert_eq!(read(&f, "age=1000e-1"), Ok(json!({"age": "1000e-1"})));
        assert_eq!(read(&f, "email=+a+b+"), Ok(json!({"email": " a b "})));
        // names the schema does not declare, as qs reads them
        assert_eq!(
            read(&f, "l=1&l=2&o[k]=v&n[]=3"),
            Ok(json!({"l": ["1", "2"], "o": {"k": "v"}, "n": ["3"]}))
        );
    }

    #[test]
    fn bracket_and_repetition_rules_are_the_query_rules() {
        let f = form(schema(), None);
        let brackets = "must be given once, without brackets (a name with [] is read as a list)";
        assert_eq!(read(&f, "email[]=a"), Err(vec![("/email".into(), brackets.into())]));
        assert_eq!(
            read(&f, "email=a&email=b"),
            Err(vec![("/email".into(), "must be given once".into())])
        );
        assert_eq!(
            read(&f, "tags[x]=1&age[]=1"),
            Err(vec![
                (
                    "/tags".into(),
                    "is a list: give it as name=a&name=b (or name[]=a, name[0]=a)".into()
                ),
                ("/age".into(), brackets.into()),
            ])
        );
        assert_eq!(
            read(&f, "address=1"),
            Err(vec![(
                "/address".into(),
                "must be given as name[member]=value (one level of brackets)".into()
            )])
        );
    }

    #[test]
    fn encoding_is_honoured() {
        let f = form(
            schema(),
            Some(json!({
                "tags": {"style": "pipeDelimited", "explode": false},
                "meta": {"contentType": "application/json"},
                "address": {"style": "form", "explode": false}
            })),
        );
        assert_eq!(
            read(&f, "tags=1|2&meta=%7B%22a%22%3A1%7D&address=zip,5"),
            Ok(json!({"tags": [1, 2], "meta": {"a": 1}, "address": {"zip": 5}}))
        );
        assert_eq!(
            read(&f, "meta=%7B"),
            Err(vec![("/meta".into(), "must be valid JSON".into())])
        );
        let commas = form(schema(), Some(json!({"tags": {"explode": false}})));
        assert_eq!(read(&commas, "tags=1,2"), Ok(json!({"tags": [1, 2]})));
    }

    #[test]
    fn the_object_read_is_what_the_schema_checks() {
        let f = form(
            json!({"type": "object", "required": ["age"], "additionalProperties": false,
                   "properties": {"age": {"type": "integer", "maximum": 120}}}),
            None,
        );
        for (body, valid) in [
            ("age=30", true),
            ("age=121", false),
            ("age=30&x=1", false),
            ("", false),
            ("age=thirty", false),
        ] {
            let v = read(&f, body).unwrap();
            assert_eq!(f.schema().is_valid(&v), valid, "{body}");
        }
    }
}
