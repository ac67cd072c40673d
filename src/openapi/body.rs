//! The request body: whether one may or must come, its media type, and its JSON schema.
//!
//! Split in two so the proxy can refuse before reading a body: [`BodyCheck::head`] decides
//! from the headers alone (presence by `Content-Length`/`Transfer-Encoding`, the media
//! type), and names what to do with the body; [`BodyCheck::body`] checks a held body.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::HeaderMap;
use jsonschema::Validator;
use serde_json::Value;

use super::media::{best_match, essence, is_json, MediaRange};
use super::rejection::{Collector, Location};
use super::schema::SchemaCompiler;
use super::spec::{At, RawBody};
use super::wording::{self, clip};

/// What the proxy does with a request's body once its head passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body is announced (no `Transfer-Encoding`, no or zero `Content-Length`).
    None,
    /// Forward it as it streams: its media type was accepted and no schema applies.
    Stream,
    /// Hold it whole (up to `max_body_bytes`) and pass it to
    /// [`super::Operation::check_body`] before anything reaches the upstream.
    Hold(HeldBody),
}

/// Which check a held body gets (opaque: it comes from the head check of the same request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBody(Held);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The operation declares no body; a chunked one must turn out empty.
    MustBeEmpty,
    /// JSON against the schema of media entry `.0`.
    Json(usize),
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

/// One media type the operation accepts, and the validator of its schema when a JSON body
/// of that type is checked.
#[derive(Debug)]
struct MediaEntry {
    range: MediaRange,
    label: String,
    schema: Option<(Validator, Value)>,
}

/// The compiled `requestBody` of an operation (`None` when it declares none).
#[derive(Debug)]
pub(crate) struct BodyCheck {
    required: bool,
    media: Vec<MediaEntry>,
}

impl BodyCheck {
    /// Builds the validators; every unreadable media type or schema is a problem.
    pub(crate) fn compile(raw: &RawBody, schemas: &SchemaCompiler, problems: &mut Vec<At>) -> BodyCheck {
        let mut media = Vec::new();
        for m in &raw.content {
            let Some(range) = MediaRange::parse(&m.media) else {
                problems.push(At::new(
                    m.pointer.trim_end_matches("/schema"),
                    format!("{:?} is not a media type (type/subtype)", m.media),
                ));
                continue;
            };
            let schema = match (&m.schema, range.may_be_json()) {
                (Some(schema), true) => match schemas.build(schema) {
                    Ok(built) => Some(built),
                    Err(e) => {
                        problems.push(At::new(&m.pointer, e));
                        None
                    }
                },
                _ => None,
            };
            media.push(MediaEntry {
                range,
                label: m.media.clone(),
                schema,
            });
        }
        BodyCheck {
            required: raw.required,
            media,
        }
    }

    /// Whether some body of this operation is held and checked against a JSON schema.
    pub(crate) fn has_schema(&self) -> bool {
        self.media.iter().any(|m| m.schema.is_some())
    }

    /// The standalone schema of the media entry a held body is checked against.
    pub(crate) fn schema_of(&self, held: HeldBody) -> Option<&Value> {
        match held.0 {
            Held::Json(i) => self.media.get(i)?.schema.as_ref().map(|(_, s)| s),
            Held::MustBeEmpty => None,
        }
    }

    /// `application/json (schema), text/plain`, and ` required` when it is.
    pub(crate) fn describe(&self) -> String {
        let media: Vec<String> = self
            .media
            .iter()
            .map(|m| match m.schema {
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

    /// The head part: presence (by the headers) and the media type.
    pub(crate) fn head(&self, headers: &HeaderMap, out: &mut Collector) -> BodyPlan {
        if announced(headers) == Announced::None {
            if self.required {
                out.push(Location::Body, "", "a body is required");
            }
            return BodyPlan::None;
        }
        match self.media_entry(headers) {
            Ok((i, true)) if self.media[i].schema.is_some() => BodyPlan::Hold(HeldBody(Held::Json(i))),
            Ok(_) => BodyPlan::Stream,
            Err(message) => {
                out.push(Location::MediaType, "Content-Type", message);
                BodyPlan::None
            }
        }
    }

    /// The media entry the request's one `Content-Type` selects, and whether that type is
    /// JSON; `Err` is the 415's message.
    fn media_entry(&self, headers: &HeaderMap) -> Result<(usize, bool), String> {
        let types: Vec<_> = headers.get_all(CONTENT_TYPE).iter().collect();
        let value = match types.as_slice() {
            [one] => one.as_bytes(),
            [] => return Err(format!("Content-Type is required: expected {}", self.offered())),
            _ => return Err("Content-Type must be given once".into()),
        };
        let selected = essence(value).and_then(|(kind, subtype)| {
            let i = best_match(self.media.iter().map(|m| &m.range), &kind, &subtype)?;
            Some((i, is_json(&kind, &subtype)))
        });
        selected.ok_or_else(|| {
            let shown = clip(&String::from_utf8_lossy(value), 100);
            format!("Content-Type {shown} is not one of: {}", self.offered())
        })
    }

    /// The held body against the schema the head check chose.
    pub(crate) fn body(&self, held: HeldBody, body: &[u8], out: &mut Collector) {
        let Held::Json(i) = held.0 else {
            return no_body_expected(body, out);
        };
        let Some((validator, _)) = self.media.get(i).and_then(|m| m.schema.as_ref()) else {
            return;
        };
        if body.is_empty() {
            if self.required {
                out.push(Location::Body, "", "a body is required");
            }
            return;
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return out.push(Location::Body, "", format!("must be valid JSON: {e}")),
        };
        if validator.is_valid(&value) {
            return;
        }
        for e in validator.iter_errors(&value) {
            for f in wording::failures(&e) {
                out.push(Location::Body, f.pointer, f.message);
            }
        }
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
        Announced::Unknown => BodyPlan::Hold(HeldBody(Held::MustBeEmpty)),
    }
}

/// The held body of an operation without a `requestBody`.
pub(crate) fn no_body_expected(body: &[u8], out: &mut Collector) {
    if !body.is_empty() {
        out.push(Location::Body, "", "this operation takes no body");
    }
}
