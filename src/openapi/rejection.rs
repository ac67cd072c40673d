//! What the edge answers when a request breaks its operation's contract (docs/reference.md, the OpenAPI section):
//! 400 `invalid_request` or 415 `unsupported_media_type`, a `message` naming the first
//! failure, and at most [`MAX_ERRORS`] `errors[]` entries.

use std::fmt;

/// At most this many `errors[]` entries (the contract's cap).
pub const MAX_ERRORS: usize = 10;

/// Where a failing value is: the `errors[].in` of the response and the `location` label of
/// `authgate_validation_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// A path parameter (its `{name}` capture, percent-decoded).
    Path,
    /// A query parameter.
    Query,
    /// A header parameter.
    Header,
    /// The JSON body, or the presence of a body.
    Body,
    /// The request's `Content-Type` (a 415).
    MediaType,
    /// A body over `[[openapi]] held_body_max` forwarded unchecked under `validate =
    /// "report"` (counted, never refused; the proxy records it).
    BodyNotChecked,
}

impl Location {
    /// Every location, in label order (metrics pre-register one series each).
    pub const ALL: [Location; 6] = [
        Location::Path,
        Location::Query,
        Location::Header,
        Location::Body,
        Location::MediaType,
        Location::BodyNotChecked,
    ];

    /// The metric label (`path`, `query`, `header`, `body`, `media_type`, `body_not_checked`).
    pub fn label(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Body => "body",
            Location::MediaType => "media_type",
            Location::BodyNotChecked => "body_not_checked",
        }
    }

    /// `errors[].in`: the contract lists body, query, path and header; the `Content-Type`
    /// check is about a header, so it renders as `header` (pointer `Content-Type`).
    pub fn json_in(self) -> &'static str {
        match self {
            Location::MediaType => "header",
            Location::BodyNotChecked => "body",
            other => other.label(),
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of locations that failed in one request: the metric counts once per request and
/// location, whatever the number of errors there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Locations(u8);

impl Locations {
    /// Only `location`: what the proxy records when it forwards a body over the held limit
    /// unchecked under `report` ([`Location::BodyNotChecked`]).
    pub fn only(location: Location) -> Locations {
        let mut l = Locations::default();
        l.insert(location);
        l
    }

    /// Whether `location` failed.
    pub fn contains(self, location: Location) -> bool {
        self.0 & location.bit() != 0
    }

    /// The failed locations, in [`Location::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Location> {
        Location::ALL.into_iter().filter(move |l| self.contains(*l))
    }

    fn insert(&mut self, location: Location) {
        self.0 |= location.bit();
    }

    /// Adds every location of `other`.
    pub fn merge(&mut self, other: Locations) {
        self.0 |= other.0;
    }
}

/// One failing value: an `errors[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `errors[].in` (via [`Location::json_in`]).
    pub location: Location,
    /// The JSON pointer of the failing value in the body (a missing property's own pointer,
    /// `/email`; `""` for the body as a whole), or the parameter's or header's name.
    pub pointer: String,
    /// What is wrong, without echoing the value (`is required`, `must be at most 100`).
    pub message: String,
}

/// Why the contract says the reason it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 400: a parameter or the body breaks the operation's schema.
    InvalidRequest,
    /// 415: the body's `Content-Type` is not one the operation accepts.
    UnsupportedMediaType,
}

impl Reason {
    /// The contract's reason string (`error` code in the response, log field).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidRequest => "invalid_request",
            Reason::UnsupportedMediaType => "unsupported_media_type",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Reason::InvalidRequest => 400,
            Reason::UnsupportedMediaType => 415,
        }
    }
}

/// A request the operation's contract refuses. The first failure decides the status and
/// the message; `errors` keeps the first [`MAX_ERRORS`]; `locations` all that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400 or 415 (the first failure's [`Reason::status`]).
    pub status: u16,
    /// The first failure's reason.
    pub reason: Reason,
    /// Names the first failure: `Invalid request body: /email is required`,
    /// `Invalid query parameter limit: must be at most 100`.
    pub message: String,
    /// The response's `errors[]`, in check order, at most [`MAX_ERRORS`].
    pub errors: Vec<FieldError>,
    /// Every location that failed (also beyond the first ten errors), for the metric.
    pub locations: Locations,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Rejection {
    /// Adds another check's failures after these (report mode runs the head and the body
    /// checks and counts both); the first failure still decides status and message.
    pub fn merge(&mut self, other: Rejection) {
        for e in other.errors {
            if self.errors.len() < MAX_ERRORS {
                self.errors.push(e);
            }
        }
        self.locations.0 |= other.locations.0;
    }
}

/// Collects failures in check order and builds the [`Rejection`].
#[derive(Debug, Default)]
pub(crate) struct Collector {
    errors: Vec<FieldError>,
    locations: Locations,
}

impl Collector {
    pub(crate) fn push(&mut self, location: Location, pointer: impl Into<String>, message: impl Into<String>) {
        self.locations.insert(location);
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(FieldError {
                location,
                pointer: pointer.into(),
                message: message.into(),
            });
        }
    }

    /// Whether nothing failed.
    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when nothing failed, else the rejection.
    pub(crate) fn finish(self) -> Result<(), Rejection> {
        let Some(first) = self.errors.first() else {
            return Ok(());
        };
        let reason = match first.location {
            Location::MediaType => Reason::UnsupportedMediaType,
            _ => Reason::InvalidRequest,
        };
        Err(Rejection {
            status: reason.status(),
            reason,
            message: headline(first),
            errors: self.errors,
            locations: self.locations,
        })
    }
}

/// The `message` for the first failure.
fn headline(e: &FieldError) -> String {
    let FieldError { pointer, message, .. } = e;
    match e.location {
        Location::Path => format!("Invalid path parameter {pointer}: {message}"),
        Location::Query => format!("Invalid query parameter {pointer}: {message}"),
        Location::Header => format!("Invalid header {pointer}: {message}"),
        Location::Body if pointer.is_empty() => format!("Invalid request body: {message}"),
        Location::Body => format!("Invalid request body: {pointer} {message}"),
        Location::MediaType => format!("Unsupported media type: {message}"),
        Location::BodyNotChecked => format!("Request body not checked: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_decides() {
        let mut c = Collector::default();
        c.push(Location::Body, "/email", "is required");
        c.push(Location::Body, "/name", "must be a string");
        let r = c.finish().unwrap_err();
        assert_eq!((r.status, r.reason.as_str()), (400, "invalid_request"));
        assert_eq!(r.message, "Invalid request body: /email is required");
        assert_eq!(r.errors.len(), 2);
        assert_eq!(r.locations.iter().collect::<Vec<_>>(), vec![Location::Body]);

        let mut c = Collector::default();
        c.push(
            Location::MediaType,
            "Content-Type",
            "must be one of: application/json (got text/plain)",
        );
        c.push(Location::Query, "limit", "must be at most 100");
        let r = c.finish().unwrap_err();
        assert_eq!((r.status, r.reason.as_str()), (415, "unsupported_media_type"));
        assert_eq!(
            r.message,
            "Unsupported media type: must be one of: application/json (got text/plain)"
        );
        assert_eq!(
            r.locations.iter().collect::<Vec<_>>(),
            vec![Location::Query, Location::MediaType]
        );
        assert!(Collector::default().finish().is_ok());
    }

    #[test]
    fn headlines() {
        let h = |location, pointer: &str, message: &str| {
            headline(&FieldError {
                location,
                pointer: pointer.into(),
                message: message.into(),
            })
        };
        assert_eq!(
            h(Location::Query, "limit", "must be at most 100"),
            "Invalid query parameter limit: must be at most 100"
        );
        assert_eq!(
            h(Location::Path, "orgId", "must be a valid uuid"),
            "Invalid path parameter orgId: must be a valid uuid"
        );
        assert_eq!(
            h(Location::Header, "X-Trace", "is required"),
            "Invalid header X-Trace: is required"
        );
        assert_eq!(
            h(Location::Body, "", "must be an object"),
            "Invalid request body: must be an object"
        );
    }

    #[test]
    fn at_most_ten_errors_but_every_location() {
        let mut c = Collector::default();
        for i in 0..25 {
            c.push(Location::Body, format!("/{i}"), "is not allowed");
        }
        c.push(Location::Header, "X", "is required");
        let mut r = c.finish().unwrap_err();
        assert_eq!(r.errors.len(), MAX_ERRORS);
        assert!(r.locations.contains(Location::Header));
        let mut other = Collector::default();
        other.push(Location::Path, "p", "is required");
        r.merge(other.finish().unwrap_err());
        assert_eq!(r.errors.len(), MAX_ERRORS);
        assert_eq!(
            r.locations.iter().map(Location::label).collect::<Vec<_>>(),
            ["path", "header", "body"]
        );
        assert_eq!(Location::MediaType.json_in(), "header");
        assert_eq!(Location::MediaType.label(), "media_type");
        let only = Locations::only(Location::BodyNotChecked);
        assert_eq!(
            only.iter().map(Location::label).collect::<Vec<_>>(),
            ["body_not_checked"]
        );
    }
}
