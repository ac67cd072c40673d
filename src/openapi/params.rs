//! Path, query and header parameters: `required`, and `schema` on the value as the upstream
//! will read it (docs/reference.md, the OpenAPI section: parameters).
//!
//! Values arrive as text and are converted by every type the schema allows before it sees
//! them ([`super::types`]). A parameter is read in its OpenAPI style:
//! - a scalar is given once, by its plain name: a second occurrence in any spelling, or a
//!   bracket suffix (`limit[]=500`, which qs makes `['500']`), is refused;
//! - an array is the repeated name (`form`, `explode: true`, the default), also written
//!   `tag[]=a&tag[]=b` or `tag[0]=a` as qs reads it; or one list split on `,` (`explode:
//!   false`, and path and header arrays), ` ` (`spaceDelimited`) or `|` (`pipeDelimited`);
//! - an object's members are top-level names (`form`, `explode: true`), `name[member]`
//!   (`deepObject`), or pairs in one list (`k,v,k,v`; `k=v,k=v` for an exploded path or
//!   header); `required` is checked on what that style sends;
//! - a parameter described by `content` with a JSON media type is JSON text.
//!
//! Path parameters in the `label` and `matrix` styles, and `content` of other media types,
//! are checked for presence only: the gateway does not parse them, and guessing would refuse
//! values the upstream accepts.

use std::borrow::Cow;

use http::HeaderMap;
use serde_json::{Map, Value};

use super::json_body;
use super::patterns::{self, UNCHECKED};
use super::query::{self, Occurrence};
use super::rejection::{Collector, Location};
use super::schema::{Patterns, SchemaCheck, SchemaCompiler};
use super::spec::{ParamIn, RawParam};
use super::types::{self, coerce, Types};
use super::wording::{clip, MAX_QUOTE};

/// Header parameters OpenAPI says are described elsewhere and to be ignored.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

/// The highest index qs reads as an array item (`tag[20]`); past it qs makes an object.
const MAX_INDEX: usize = 20;

/// Where one text holds a list's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// Each occurrence is one item.
    Repeated,
    /// One occurrence, split on this byte.
    On(u8),
}

/// How an object parameter is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectStyle {
    /// Its members are top-level query names (`form`, `explode: true`).
    Exploded,
    /// `name[member]=value` (`deepObject`).
    Deep,
    /// One list of alternating names and values (`k,v,k,v`).
    Pairs,
    /// One list of `k=v` items (`simple`, `explode: true`).
    Assigned,
}

/// What a parameter's text becomes.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Scalar(Types),
    Array {
        items: Types,
        split: Split,
    },
    Object {
        members: Vec<(String, Types)>,
        style: ObjectStyle,
    },
    /// `content: {application/json: ...}`: the text is JSON.
    Json,
    /// Checked for presence only.
    Presence,
}

/// One compiled parameter check.
#[derive(Debug)]
pub(crate) struct ParamCheck {
    pub(crate) name: String,
    pub(crate) location: ParamIn,
    required: bool,
    shape: Shape,
    check: Option<SchemaCheck>,
}

impl ParamCheck {
    /// Builds the check; `Err` is a message for the parameter's schema. Cookie parameters
    /// and the headers OpenAPI says to ignore yield `Ok(None)`.
    pub(crate) fn compile(
        raw: &RawParam,
        schemas: &SchemaCompiler,
        patterns: Patterns,
    ) -> Result<Option<ParamCheck>, String> {
        if raw.location == ParamIn::Cookie
            || (raw.location == ParamIn::Header && IGNORED_HEADERS.contains(&raw.name.to_ascii_lowercase().as_str()))
        {
            return Ok(None);
        }
        let (shape, schema) = match (&raw.schema, &raw.content_json) {
            (Some(schema), _) => (shape(raw, schema, schemas)?, Some(schema)),
            (None, Some(schema)) => (Shape::Json, Some(schema)),
            (None, None) => (Shape::Presence, None),
        };
        let check = match (schema, &shape) {
            (Some(_), Shape::Presence) | (None, _) => None,
            (Some(schema), _) => Some(schemas.build(schema, patterns)?),
        };
        let name = if raw.location == ParamIn::Header {
            raw.name.to_ascii_lowercase()
        } else {
            raw.name.clone()
        };
        // a free-form object whose members are top-level names: nothing tells which names
        // are its members, so neither its presence nor its value can be read
        let free_form = matches!(&shape, Shape::Object { members, style: ObjectStyle::Exploded } if members.is_empty());
        Ok(Some(ParamCheck {
            name,
            location: raw.location,
            required: raw.required && !free_form,
            shape: if free_form { Shape::Presence } else { shape },
            check: if free_form { None } else { check },
        }))
    }

    fn location(&self) -> Location {
        match self.location {
            ParamIn::Path => Location::Path,
            ParamIn::Query => Location::Query,
            ParamIn::Header | ParamIn::Cookie => Location::Header,
        }
    }

    /// Checks a query parameter against the raw query (the bytes after `?`).
    pub(crate) fn check_query(&self, query: Option<&[u8]>, out: &mut Collector, budget: &mut u64) {
        let found = |name: &str| query.map(|q| query::occurrences(q, name)).unwrap_or_default();
        let value = match &self.shape {
            Shape::Object {
                members,
                style: ObjectStyle::Exploded,
            } => exploded_object(members, &found),
            _ => {
                let occurrences = found(&self.name);
                if occurrences.is_empty() {
                    Ok(None)
                } else {
                    self.read_occurrences(&occurrences).map(Some)
                }
            }
        };
        self.finish(value, out, budget);
    }

    /// Checks a path capture (decoded) or a header's field values.
    pub(crate) fn check_values(&self, raw: &[&[u8]], out: &mut Collector, budget: &mut u64) {
        let value = if raw.is_empty() {
            Ok(None)
        } else {
            self.read_values(raw).map(Some)
        };
        self.finish(value, out, budget);
    }

    /// Presence, then the schema on the value read.
    fn finish(&self, value: Result<Option<Value>, String>, out: &mut Collector, budget: &mut u64) {
        let location = self.location();
        let value = match value {
            Ok(Some(v)) => v,
            Ok(None) => {
                if self.required {
                    out.push(location, &self.name, "is required");
                }
                return;
            }
            Err(message) => return out.push(location, &self.name, message),
        };
        let Some(check) = &self.check else { return };
        let (failures, spent) = patterns::with_budget(*budget, || {
            if check.is_valid(&value) {
                Vec::new()
            } else {
                check.failures(&value)
            }
        });
        *budget = spent.left;
        if spent.exhausted {
            return out.push(location, &self.name, UNCHECKED);
        }
        for f in failures {
            let message = if f.pointer.is_empty() {
                f.message
            } else {
                format!("{} {}", f.pointer, f.message)
            };
            out.push(location, &self.name, message);
        }
    }

    /// A query parameter's value from every occurrence of its name.
    fn read_occurrences(&self, found: &[Occurrence<'_>]) -> Result<Value, String> {
        match &self.shape {
            Shape::Presence => Ok(Value::Null),
            Shape::Scalar(types) => scalar(found, *types),
            Shape::Json => json_text(only_plain(found)?),
            Shape::Array { items, split } => array(found, *items, *split),
            Shape::Object { members, style } => match style {
                ObjectStyle::Deep => deep_object(members, found),
                ObjectStyle::Pairs => pairs(only_plain(found)?, members, b',', false),
                ObjectStyle::Assigned => pairs(only_plain(found)?, members, b',', true),
                ObjectStyle::Exploded => Err("cannot be read".into()),
            },
        }
    }

    /// A path or header parameter's value from its text(s): lists are comma-separated (the
    /// lines of a repeated header joined, as RFC 9110 reads them).
    fn read_values(&self, raw: &[&[u8]]) -> Result<Value, String> {
        let single = || match raw {
            [one] => text(one),
            _ => Err("must be given once".to_string()),
        };
        match &self.shape {
            Shape::Presence => Ok(Value::Null),
            Shape::Scalar(types) => Ok(coerce(single()?, *types)),
            Shape::Json => json_text(single()?),
            Shape::Array { items, .. } => {
                let mut values = Vec::new();
                for r in raw {
                    values.extend(split_list(text(r)?, b',').map(|part| coerce(part, *items)));
                }
                Ok(Value::Array(values))
            }
            Shape::Object { members, style } => pairs(single()?, members, b',', *style == ObjectStyle::Assigned),
        }
    }
}

pub(crate) fn text(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|_| "must be valid UTF-8".to_string())
}

/// The parameter's shape from its schema and style; `Err` for a schema that would check
/// nothing (numeric keywords on text).
fn shape(raw: &RawParam, schema: &Value, schemas: &SchemaCompiler) -> Result<Shape, String> {
    let t = types::types_of(schema, schemas);
    let shape = if t.array() && !t.is_any() && !t.object() {
        array_shape(raw, types::item_types(schema, schemas))
    } else if t.object() && !t.is_any() && !t.array() {
        object_shape(raw, types::property_types(schema, schemas))
    } else if raw.location == ParamIn::Path && !matches!(raw.style.as_str(), "simple") {
        Shape::Presence
    } else {
        Shape::Scalar(t)
    };
    let mut subschemas = vec![schema];
    match &shape {
        Shape::Array { .. } => subschemas = types::parts(schema, schemas, "items"),
        Shape::Object { .. } => {
            subschemas = types::parts(schema, schemas, "properties")
                .into_iter()
                .filter_map(Value::as_object)
                .flat_map(|m| m.values())
                .collect();
        }
        _ => {}
    }
    for s in subschemas {
        let keywords = types::untyped_numeric_keywords(s, schemas);
        if let Some(first) = keywords.first() {
            return Err(format!(
                "parameter {:?}: {} with no integer or number type: its value stays text, which {first} does not check; add `type: integer` (or `number`)",
                raw.name,
                keywords.join(", ")
            ));
        }
    }
    Ok(shape)
}

fn array_shape(raw: &RawParam, items: Types) -> Shape {
    let split = match (raw.location, raw.style.as_str(), raw.explode) {
        (ParamIn::Query, "form" | "spaceDelimited" | "pipeDelimited", true) => Split::Repeated,
        (ParamIn::Query, "form", false) | (ParamIn::Path | ParamIn::Header, "simple", _) => Split::On(b','),
        (ParamIn::Query, "spaceDelimited", false) => Split::On(b' '),
        (ParamIn::Query, "pipeDelimited", false) => Split::On(b'|'),
        _ => return Shape::Presence,
    };
    Shape::Array { items, split }
}

fn object_shape(raw: &RawParam, members: Vec<(String, Types)>) -> Shape {
    let style = match (raw.location, raw.style.as_str(), raw.explode) {
        (ParamIn::Query, "form", true) => ObjectStyle::Exploded,
        (ParamIn::Query, "deepObject", _) => ObjectStyle::Deep,
        (ParamIn::Query, "form", false) | (ParamIn::Path | ParamIn::Header, "simple", false) => ObjectStyle::Pairs,
        (ParamIn::Path | ParamIn::Header, "simple", true) => ObjectStyle::Assigned,
        _ => return Shape::Presence,
    };
    Shape::Object { members, style }
}

/// The one plain occurrence a list written as one text must be.
pub(crate) fn only_plain<'a>(found: &'a [Occurrence<'_>]) -> Result<&'a str, String> {
    match found {
        [one] if one.path.is_empty() && !one.malformed => text(&one.value),
        [_] => Err("must be given once, without brackets".into()),
        _ => Err("must be given once".into()),
    }
}

/// A scalar: one plain occurrence.
pub(crate) fn scalar(found: &[Occurrence<'_>], types: Types) -> Result<Value, String> {
    if found.iter().any(|o| !o.path.is_empty() || o.malformed) {
        return Err("must be given once, without brackets (a name with [] is read as a list)".into());
    }
    Ok(coerce(only_plain(found)?, types))
}

/// An array: the repeated name (or `name[]`, `name[0]`) item by item, or one list.
pub(crate) fn array(found: &[Occurrence<'_>], items: Types, split: Split) -> Result<Value, String> {
    let values = match split {
        Split::On(sep) => split_list(only_plain(found)?, sep).map(|p| coerce(p, items)).collect(),
        Split::Repeated => {
            let mut values = Vec::with_capacity(found.len());
            for o in found {
                if !is_item(o) {
                    return Err("is a list: give it as name=a&name=b (or name[]=a, name[0]=a)".into());
                }
                values.push(coerce(text(&o.value)?, items));
            }
            values
        }
    };
    Ok(Value::Array(values))
}

/// `name`, `name[]` or `name[N]` (N at most 20): one item of a list, as qs reads it.
fn is_item(o: &Occurrence<'_>) -> bool {
    if o.malformed {
        return false;
    }
    match o.path.as_slice() {
        [] => true,
        [index] => {
            index.is_empty()
                || (index.iter().all(u8::is_ascii_digit)
                    && std::str::from_utf8(index)
                        .ok()
                        .and_then(|i| i.parse::<usize>().ok())
                        .is_some_and(|i| i <= MAX_INDEX))
        }
        _ => false,
    }
}

fn split_list(text: &str, sep: u8) -> impl Iterator<Item = &str> {
    text.split(sep as char).map(|part| part.trim_matches([' ', '\t']))
}

/// The JSON text of a `content` parameter.
pub(crate) fn json_text(text: &str) -> Result<Value, String> {
    let bytes = json_body::for_validation(text.as_bytes());
    serde_json::from_slice(&bytes).map_err(|_| "must be valid JSON".to_string())
}

/// A member's value from its occurrences: scalar rules, or a list when its type is one.
fn member(found: &[Occurrence<'_>], types: Types) -> Result<Value, String> {
    if types.only_array() {
        array(found, Types::ANY, Split::Repeated)
    } else {
        scalar(found, types)
    }
}

/// `form` + `explode`: each declared member is a top-level name. Absent when none is given.
fn exploded_object<'q>(
    members: &[(String, Types)],
    found: &dyn Fn(&str) -> Vec<Occurrence<'q>>,
) -> Result<Option<Value>, String> {
    let mut object = Map::new();
    for (name, types) in members {
        let occurrences = found(name);
        if occurrences.is_empty() {
            continue;
        }
        let value = member(&occurrences, *types).map_err(|m| format!("member {}: {m}", clip(name, MAX_QUOTE)))?;
        object.insert(name.clone(), value);
    }
    Ok((!object.is_empty()).then_some(Value::Object(object)))
}

/// `deepObject`: `name[member]=value`, one level.
pub(crate) fn deep_object(members: &[(String, Types)], found: &[Occurrence<'_>]) -> Result<Value, String> {
    let mut grouped: Vec<(String, Vec<Occurrence<'_>>)> = Vec::new();
    for o in found {
        let [key] = o.path.as_slice() else {
            return Err("must be given as name[member]=value (one level of brackets)".into());
        };
        if o.malformed || key.is_empty() {
            return Err("must be given as name[member]=value (one level of brackets)".into());
        }
        let key = text(key)?.to_string();
        let plain = Occurrence {
            path: Vec::new(),
            malformed: false,
            value: Cow::Owned(o.value.to_vec()),
        };
        match grouped.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(plain),
            None => grouped.push((key, vec![plain])),
        }
    }
    let mut object = Map::new();
    for (key, occurrences) in grouped {
        let types = member_types(members, &key);
        let value = member(&occurrences, types).map_err(|m| format!("member {}: {m}", clip(&key, MAX_QUOTE)))?;
        object.insert(key, value);
    }
    Ok(Value::Object(object))
}

fn member_types(members: &[(String, Types)], name: &str) -> Types {
    members.iter().find(|(n, _)| n == name).map_or(Types::ANY, |(_, t)| *t)
}

/// An object as one list: `k,v,k,v`, or `k=v,k=v` when `assigned`.
pub(crate) fn pairs(text: &str, members: &[(String, Types)], sep: u8, assigned: bool) -> Result<Value, String> {
    let mut object = Map::new();
    let mut parts = split_list(text, sep);
    while let Some(first) = parts.next() {
        let (key, value) = if assigned {
            first.split_once('=').ok_or("must be a list of name=value")?
        } else {
            (first, parts.next().ok_or("must be a list of name,value pairs")?)
        };
        if object.contains_key(key) {
            return Err(format!("member {}: must be given once", clip(key, MAX_QUOTE)));
        }
        object.insert(key.to_string(), coerce(value, member_types(members, key)));
    }
    Ok(Value::Object(object))
}

/// The field values of a header, for a header parameter.
pub(crate) fn header_values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h [u8]> {
    headers.get_all(name).iter().map(|v| v.as_bytes()).collect()
}

#[cfg(test)]
mod tests;
