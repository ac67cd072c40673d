//! The request body: whether one may or must come, its media type, and its schema.
//!
//! Split in two so the proxy can refuse before reading a body: [`BodyCheck::head`] decides
//! from the headers alone (presence by `Content-Length`/`Transfer-Encoding`, the media
//! type and its `charset`), and names what to do with the body; [`BodyCheck::body`] checks a
//! held body.
//!
//! A media type the operation declares with a schema is checked, or the spec is refused at
//! `check` (docs/reference.md, the OpenAPI section): JSON (`application/json`,
//! `application/*+json`) and `application/x-www-form-urlencoded` bodies are held and checked;
//! any other media type (`multipart/*`, `text/plain`, a range such as `application/*`) may
//! carry only a schema that constrains nothing about bytes (`{}`, `{type: string, format:
//! binary}`), unless the operation's validation is off.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::HeaderMap;
use serde_json::Value;

use super::form::FormCheck;
use super::json_body;
use super::media::{best_match, body_kind, check_charset, essence, BodyKind, MediaRange};
use super::patterns::{self, UNCHECKED};
use super::rejection::{Collector, Location};
use super::schema::{Patterns, SchemaCheck, SchemaCompiler};
use super::spec::{At, RawBody, RawMedia};
use super::wording::clip;

/// What the proxy does with a request's body once its head passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body is announced (no `Transfer-Encoding`, no or zero `Content-Length`).
    None,
    /// Forward it as it streams: its media type was accepted and no schema applies.
    Stream,
    /// Hold it whole (up to the held limit) and pass it to
    /// [`super::Operation::check_body`] before anything reaches the upstream.
    Hold(HeldBody),
}

/// Which check a held body gets, and the backtracking budget the head's checks left for it
/// (opaque: it comes from the head check of the same request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBody {
    held: Held,
    budget: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The operation declares no body; a chunked one must turn out empty.
    MustBeEmpty,
    /// JSON against the schema of media entry `.0`.
    Json(usize),
    /// A form body against the schema of media entry `.0`.
    Form(usize),
}

impl HeldBody {
    fn new(held: Held, budget: u64) -> HeldBody {
        HeldBody { held, budget }
    }
}

/// Whether the headers announce a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announced {
    None,
    /// A positive `Content-Length`: the body is known to be non-empty.
    Sized,
    /// `Transfer-Encoding` (or an unreadable length): it may still turn out empty.
    Unknown,
}

fn announced(headers: &HeaderMap) -> Announced {
    if headers.contains_key(TRANSFER_ENCODING) {
        return Announced::Unknown;
    }
    let lengths: Vec<_> = headers.get_all(CONTENT_LENGTH).iter().collect();
    match lengths.as_slice() {
        [] => Announced::None,
        [one] => match one.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(0) => Announced::None,
            Some(_) => Announced::Sized,
            None => Announced::Unknown,
        },
        _ => Announced::Unknown,
    }
}

/// How a held body of one media entry is checked.
#[derive(Debug)]
enum Check {
    Json(SchemaCheck),
    Form(FormCheck),
}

/// One media type the operation accepts, and how a body of it is checked (`None`: it
/// streams).
#[derive(Debug)]
struct MediaEntry {
    range: MediaRange,
    label: String,
    check: Option<Check>,
}

/// The compiled `requestBody` of an operation (`None` when it declares none).
#[derive(Debug)]
pub(crate) struct BodyCheck {
    required: bool,
    media: Vec<MediaEntry>,
}

impl BodyCheck {
    /// Builds the checks; every unreadable media type, schema the gateway cannot check, or
    /// schema that does not compile is a problem.
    pub(crate) fn compile(
        raw: &RawBody,
        schemas: &SchemaCompiler,
        patterns: Patterns,
        problems: &mut Vec<At>,
    ) -> BodyCheck {
        let mut media = Vec::new();
        for m in &raw.content {
            let Some(range) = MediaRange::parse(&m.media) else {
                problems.push(At::new(
                    m.pointer.trim_end_matches("/schema"),
                    format!("{:?} is not a media type (type/subtype)", m.media),
                ));
                continue;
            };
            let check = match &m.schema {
                Some(schema) => media_check(m, schema, &range, schemas, patterns).unwrap_or_else(|e| {
                    problems.push(At::new(&m.pointer, e));
                    None
                }),
                None => None,
            };
            media.push(MediaEntry {
                range,
                label: m.media.clone(),
                check,
            });
        }
        BodyCheck {
            required: raw.required,
            media,
        }
    }

    /// Whether some body of this operation is held and checked against a schema.
    pub(crate) fn has_schema(&self) -> bool {
        self.media.iter().any(|m| m.check.is_some())
    }

    /// The standalone JSON schema a held JSON body is checked against.
    pub(crate) fn schema_of(&self, held: HeldBody) -> Option<Value> {
        match held.held {
            Held::Json(i) => match &self.media.get(i)?.check {
                Some(Check::Json(s)) => Some(s.standalone()),
                _ => None,
            },
            Held::Form(_) | Held::MustBeEmpty => None,
        }
    }

    /// `application/json (schema), text/plain`, and ` required` when it is.
    pub(crate) fn describe(&self) -> String {
        let media: Vec<String> = self
            .media
            .iter()
            .map(|m| match m.check {
                Some(_) => format!("{} (schema)", m.label),
                None => m.label.clone(),
            })
            .collect();
        let required = if self.required { " required" } else { "" };
        format!("{}{required}", media.join(", "))
    }

    fn offered(&self) -> String {
        clip(
            &self
                .media
                .iter()
                .map(|m| m.label.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            200,
        )
    }

    /// The head part: presence (by the headers), the media type and its charset. `budget`
    /// is what the parameters left, carried to the body check.
    pub(crate) fn head(&self, headers: &HeaderMap, out: &mut Collector, budget: u64) -> BodyPlan {
        if announced(headers) == Announced::None {
            if self.required {
                out.push(Location::Body, "", "a body is required");
            }
            return BodyPlan::None;
        }
        match self.media_entry(headers) {
            Ok(i) => match self.media[i].check {
                Some(Check::Json(_)) => BodyPlan::Hold(HeldBody::new(Held::Json(i), budget)),
                Some(Check::Form(_)) => BodyPlan::Hold(HeldBody::new(Held::Form(i), budget)),
                None => BodyPlan::Stream,
            },
            Err(message) => {
                out.push(Location::MediaType, "Content-Type", message);
                BodyPlan::None
            }
        }
    }

    /// The media entry the request's one `Content-Type` selects; `Err` is the 415's
    /// message. A JSON or form body must be UTF-8: a `charset` other than `utf-8` is refused.
    fn media_entry(&self, headers: &HeaderMap) -> Result<usize, String> {
        let types: Vec<_> = headers.get_all(CONTENT_TYPE).iter().collect();
        let value = match types.as_slice() {
            [one] => one.as_bytes(),
            [] => return Err(format!("Content-Type is required: expected {}", self.offered())),
            _ => return Err("Content-Type must be given once".into()),
        };
        let shown = || clip(&String::from_utf8_lossy(value), 100);
        let (kind, subtype) =
            essence(value).ok_or_else(|| format!("Content-Type {} is not one of: {}", shown(), self.offered()))?;
        let i = best_match(self.media.iter().map(|m| &m.range), &kind, &subtype)
            .ok_or_else(|| format!("Content-Type {} is not one of: {}", shown(), self.offered()))?;
        if body_kind(&kind, &subtype) != BodyKind::Opaque {
            check_charset(value).map_err(|e| format!("Content-Type {}: {e}", shown()))?;
        }
        Ok(i)
    }

    /// The held body against the check the head chose.
    pub(crate) fn body(&self, held: HeldBody, body: &[u8], out: &mut Collector) {
        let (Held::Json(i) | Held::Form(i)) = held.held else {
            return no_body_expected(body, out);
        };
        let Some(check) = self.media.get(i).and_then(|m| m.check.as_ref()) else {
            return;
        };
        if body.is_empty() {
            if self.required {
                out.push(Location::Body, "", "a body is required");
            }
            return;
        }
        let value = match check {
            Check::Json(_) => match serde_json::from_slice::<Value>(&json_body::for_validation(body)) {
                Ok(v) => v,
                Err(e) => return out.push(Location::Body, "", format!("must be valid JSON: {e}")),
            },
            Check::Form(form) => match form.read(body, out) {
                Some(v) => v,
                None => return,
            },
        };
        let schema = match check {
            Check::Json(s) => s,
            Check::Form(form) => form.schema(),
        };
        schema_failures(schema, &value, held.budget, out);
    }
}

/// The schema on a held body's value, within the request's backtracking budget.
fn schema_failures(schema: &SchemaCheck, value: &Value, budget: u64, out: &mut Collector) {
    let (failures, spent) = patterns::with_budget(budget, || {
        if schema.is_valid(value) {
            Vec::new()
        } else {
            schema.failures(value)
        }
    });
    if spent.exhausted {
        return out.push(Location::Body, "", UNCHECKED);
    }
    for f in failures {
        out.push(Location::Body, f.pointer, f.message);
    }
}

/// How one media entry with a schema is checked: JSON and form bodies are held; any other
/// media type is an error unless its schema constrains nothing a byte body could fail.
fn media_check(
    m: &RawMedia,
    schema: &Value,
    range: &MediaRange,
    schemas: &SchemaCompiler,
    patterns: Patterns,
) -> Result<Option<Check>, String> {
    match range.kind() {
        BodyKind::Json => Ok(Some(Check::Json(schemas.build(schema, patterns)?))),
        BodyKind::Form => {
            let check = schemas.build(schema, patterns)?;
            Ok(Some(Check::Form(FormCheck::new(schema, m.encoding.as_ref(), schemas, check))))
        }
        BodyKind::Opaque if constrains_nothing(schema) => Ok(None),
        BodyKind::Opaque => Err(format!(
            "{:?} has a schema the gateway cannot check ({}): only JSON and application/x-www-form-urlencoded bodies are validated; set validate = \"off\" in the operation's x-authgate (or an [[openapi.operations]] entry) to forward such bodies unchecked",
            m.media,
            if range.is_range() { "a media range matches bodies of any kind" } else { "it does not parse this media type" }
        )),
    }
}

/// A schema that says nothing a byte body could fail: `true`, `{}`, or only annotations and
/// `type: string` with `format: binary`/`byte`, `contentMediaType`, `contentEncoding` (how
/// OpenAPI describes file uploads).
fn constrains_nothing(schema: &Value) -> bool {
    match schema {
        Value::Bool(true) => true,
        Value::Object(map) => map.iter().all(|(k, v)| match k.as_str() {
            "type" => v == "string",
            "format" => v == "binary" || v == "byte",
            "contentMediaType" | "contentEncoding" | "title" | "description" | "examples" | "example" | "$comment"
            | "deprecated" | "readOnly" | "writeOnly" => true,
            k => k.starts_with("x-"),
        }),
        _ => false,
    }
}

/// The head part for an operation without a `requestBody`: a body is refused when it is
/// known to be there, and held (to prove it empty) when it may be.
pub(crate) fn head_without_body(headers: &HeaderMap, out: &mut Collector) -> BodyPlan {
    match announced(headers) {
        Announced::None => BodyPlan::None,
        Announced::Sized => {
            out.push(Location::Body, "", "this operation takes no body");
            BodyPlan::None
        }
        Announced::Unknown => BodyPlan::Hold(HeldBody::new(Held::MustBeEmpty, 0)),
    }
}

/// The held body of an operation without a `requestBody`.
pub(crate) fn no_body_expected(body: &[u8], out: &mut Collector) {
    if !body.is_empty() {
        out.push(Location::Body, "", "this operation takes no body");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_a_byte_body_schema_may_say() {
        for nothing in [
            json!(true),
            json!({}),
            json!({"type": "string", "format": "binary"}),
            json!({"type": "string", "contentMediaType": "image/png", "description": "a logo"}),
            json!({"x-note": 1}),
        ] {
            assert!(constrains_nothing(&nothing), "{nothing}");
        }
        for something in [
            json!(false),
            json!({"type": "object", "properties": {"file": {}}}),
            json!({"type": "string", "maxLength": 10}),
            json!({"type": "integer"}),
            json!({"$ref": "#/components/schemas/Upload"}),
        ] {
            assert!(!constrains_nothing(&something), "{something}");
        }
    }
}
