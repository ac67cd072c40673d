//! Every way a request can be refused, and the one function that turns a refusal into the
//! status, headers and JSON body the partner sees (docs/reference.md#responses).

use std::fmt::Write as _;

use super::jwt::TokenError;
use super::method::MethodProblem;
use super::path::PathProblem;
use super::routes::{AuthKind, ErrorFormat};
use crate::json_text::push_quoted;
use crate::openapi::{Reason as CheckReason, Rejection};

/// A refused request. Variants map 1:1 onto the reason names of docs/reference.md#pipeline (`reason()`),
/// except that the api-key variants share `missing_token` / `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    BadPath(PathProblem),
    /// A lowercase method, or a `_method` query parameter (docs/reference.md#pipeline, step 0).
    BadMethod(MethodProblem),
    BodyTooLarge {
        limit: u64,
    },
    NoRoute,
    /// A path an `[[openapi]]` spec documents, with a method it does not (step 1): the
    /// `Allow` header's value.
    MethodNotAllowed {
        allow: Box<str>,
    },
    /// Step 7a: the request breaks its spec operation's contract (400, or 415 for the media
    /// type), with the failures partners can act on.
    InvalidRequest(Box<Rejection>),
    /// No `Authorization` header, or a scheme other than Bearer.
    MissingToken,
    InvalidToken(TokenError),
    /// `auth = "api_key"`: the header is absent.
    MissingApiKey,
    /// `auth = "api_key"`: not prefix + 16-128 of `[A-Za-z0-9_-]`.
    BadApiKeyFormat,
    /// `auth = "api_key"`: no key has this digest.
    UnknownApiKey,
    KeyDisabled,
    UnknownPartner,
    RevokedKey,
    IpDenied,
    InactivePartner,
    RateLimited {
        limit: String,
        per_minute: u32,
        retry_after_secs: u64,
    },
    OrgForbidden,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// `[redis] on_error = "deny"` and the shared state is unreachable (docs/reference.md#shared-state-across-replicas).
    SharedStateUnavailable,
    /// Something went wrong inside the gateway; details are only logged.
    Internal,
    /// The client sent something unparseable beyond the request line (bad chunking...).
    BadRequest,
    /// A body that did not arrive within `[server] body_timeout` (docs/reference.md#server):
    /// held, whole; streamed, between two reads.
    RequestTimeout,
    /// A request head over `[server] max_head_bytes` (431; the connection is closed).
    HeadTooLarge {
        limit: u64,
    },
}

/// Declares a fieldless enum together with `ALL`, every variant in declaration order, both
/// from the one list of variants: a variant cannot be added without being in `ALL`. A list
/// kept by hand compiled with a variant missing, and whatever was sized or indexed by it (the
/// metrics' children per reason) panicked on that variant's first use. Explicit discriminants
/// are not accepted, so a variant's `as usize` is its position in `ALL`.
macro_rules! closed_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident,)+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order (index = position), derived from the
            /// declaration.
            $vis const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];
        }
    };
}

closed_enum! {
    /// The failure names (docs/reference.md#pipeline; the `reason` label), one closed set: the
    /// metrics pre-build one child per variant of [`Reason::ALL`], so a new reason is counted
    /// under its own name from the start and can never fall into a catch-all.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(crate) enum Reason {
        BadPath,
        BadMethod,
        BodyTooLarge,
        NoRoute,
        MethodNotAllowed,
        InvalidRequest,
        UnsupportedMediaType,
        MissingToken,
        InvalidToken,
        KeyDisabled,
        UnknownPartner,
        RevokedKey,
        IpDenied,
        InactivePartner,
        RateLimited,
        OrgForbidden,
        UpstreamUnavailable,
        UpstreamTimeout,
        SharedStateUnavailable,
        InternalError,
        BadRequest,
        RequestTimeout,
        HeadTooLarge,
    }
}

impl Reason {
    /// The label value and access-log field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::BadPath => "bad_path",
            Reason::BadMethod => "bad_method",
            Reason::BodyTooLarge => "body_too_large",
            Reason::NoRoute => "no_route",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::InvalidRequest => "invalid_request",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::MissingToken => "missing_token",
            Reason::InvalidToken => "invalid_token",
            Reason::KeyDisabled => "key_disabled",
            Reason::UnknownPartner => "unknown_partner",
            Reason::RevokedKey => "revoked_key",
            Reason::IpDenied => "ip_denied",
            Reason::InactivePartner => "inactive_partner",
            Reason::RateLimited => "rate_limited",
            Reason::OrgForbidden => "org_forbidden",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::SharedStateUnavailable => "shared_state_unavailable",
            Reason::InternalError => "internal_error",
            Reason::BadRequest => "bad_request",
            Reason::RequestTimeout => "request_timeout",
            Reason::HeadTooLarge => "head_too_large",
        }
    }

    /// Position in [`Reason::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl Denial {
    /// The failure name (docs/reference.md#pipeline) (metric label `reason`, access-log field).
    pub(crate) fn reason(&self) -> Reason {
        match self {
            Denial::BadPath(_) => Reason::BadPath,
            Denial::BadMethod(_) => Reason::BadMethod,
            Denial::BodyTooLarge { .. } => Reason::BodyTooLarge,
            Denial::NoRoute => Reason::NoRoute,
            Denial::MethodNotAllowed { .. } => Reason::MethodNotAllowed,
            Denial::InvalidRequest(r) => match r.reason {
                CheckReason::InvalidRequest => Reason::InvalidRequest,
                CheckReason::UnsupportedMediaType => Reason::UnsupportedMediaType,
            },
            Denial::MissingToken | Denial::MissingApiKey => Reason::MissingToken,
            Denial::InvalidToken(_) | Denial::BadApiKeyFormat | Denial::UnknownApiKey => Reason::InvalidToken,
            Denial::KeyDisabled => Reason::KeyDisabled,
            Denial::UnknownPartner => Reason::UnknownPartner,
            Denial::RevokedKey => Reason::RevokedKey,
            Denial::IpDenied => Reason::IpDenied,
            Denial::InactivePartner => Reason::InactivePartner,
            Denial::RateLimited { .. } => Reason::RateLimited,
            Denial::OrgForbidden => Reason::OrgForbidden,
            Denial::UpstreamUnavailable => Reason::UpstreamUnavailable,
            Denial::UpstreamTimeout => Reason::UpstreamTimeout,
            Denial::SharedStateUnavailable => Reason::SharedStateUnavailable,
            Denial::Internal => Reason::InternalError,
            Denial::BadRequest => Reason::BadRequest,
            Denial::RequestTimeout => Reason::RequestTimeout,
            Denial::HeadTooLarge { .. } => Reason::HeadTooLarge,
        }
    }

    /// HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Denial::BadPath(_) | Denial::BadMethod(_) | Denial::BadRequest => 400,
            Denial::BodyTooLarge { .. } => 413,
            Denial::NoRoute => 404,
            Denial::MethodNotAllowed { .. } => 405,
            Denial::InvalidRequest(r) => r.status,
            Denial::MissingToken
            | Denial::InvalidToken(_)
            | Denial::MissingApiKey
            | Denial::BadApiKeyFormat
            | Denial::UnknownApiKey
            | Denial::UnknownPartner
            | Denial::RevokedKey
            | Denial::InactivePartner => 401,
            Denial::KeyDisabled | Denial::IpDenied | Denial::OrgForbidden => 403,
            Denial::RateLimited { .. } => 429,
            Denial::UpstreamUnavailable => 502,
            Denial::UpstreamTimeout => 504,
            Denial::SharedStateUnavailable => 503,
            Denial::Internal => 500,
            Denial::RequestTimeout => 408,
            Denial::HeadTooLarge { .. } => 431,
        }
    }

    /// Message for the partner. Never contains the token or key.
    pub(crate) fn message(&self, api_key_header: &str) -> String {
        match self {
            Denial::BadPath(p) => format!("Bad request path: {}", p.describe()),
            Denial::BadMethod(p) => format!("Bad request method: {}", p.describe()),
            Denial::BodyTooLarge { limit } => format!("Request body is larger than the {limit}-byte limit"),
            Denial::NoRoute => "No route matches this method and path".into(),
            Denial::MethodNotAllowed { allow } => format!("Method not allowed on this path; allowed: {allow}"),
            Denial::InvalidRequest(r) => r.message.clone(),
            Denial::MissingToken => "Missing API key: send Authorization: Bearer <API key>".into(),
            Denial::InvalidToken(e) => e.message().into(),
            Denial::MissingApiKey => format!("Missing {api_key_header} header"),
            Denial::BadApiKeyFormat => "Invalid API key format".into(),
            Denial::UnknownApiKey => "Invalid API key".into(),
            Denial::KeyDisabled => "API key is disabled".into(),
            Denial::UnknownPartner => "Unknown partner or org for this API key".into(),
            Denial::RevokedKey => "API key has been revoked".into(),
            Denial::IpDenied => "Client IP is not in the allow list for this account".into(),
            Denial::InactivePartner => "Account is inactive".into(),
            Denial::RateLimited {
                limit,
                per_minute,
                retry_after_secs,
            } => format!("Rate limit '{limit}' exceeded: {per_minute}/min; retry in {retry_after_secs}s"),
            Denial::OrgForbidden => "Org does not belong to this partner".into(),
            Denial::UpstreamUnavailable => "Upstream service unavailable".into(),
            Denial::UpstreamTimeout => "Upstream service timed out".into(),
            Denial::SharedStateUnavailable => "Shared gateway state is unavailable; retry in a second".into(),
            Denial::Internal => "Internal server error".into(),
            Denial::BadRequest => "Malformed request".into(),
            Denial::RequestTimeout => "The request body did not arrive in time".into(),
            Denial::HeadTooLarge { limit } => format!("Request head is larger than the {limit}-byte limit"),
        }
    }
}

/// What the route says about how to answer (auth scheme and error shape).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerStyle<'a> {
    pub(crate) auth: AuthKind,
    pub(crate) error_format: ErrorFormat,
    /// The api-key header name, on `auth = "api_key"` routes.
    pub(crate) api_key_header: &'a str,
}

impl Default for AnswerStyle<'_> {
    fn default() -> Self {
        AnswerStyle {
            auth: AuthKind::None,
            error_format: ErrorFormat::Dto,
            api_key_header: "X-API-Key",
        }
    }
}

/// A gateway-written response: status, extra headers, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

/// Maps a denial to the response, in exactly one place.
pub(crate) fn render(denial: &Denial, style: AnswerStyle<'_>) -> ErrorResponse {
    let status = denial.status();
    let message = denial.message(style.api_key_header);
    let mut headers = Vec::new();
    if status == 401 {
        let value = match style.auth {
            AuthKind::ApiKey => format!("ApiKey header=\"{}\"", style.api_key_header),
            _ if matches!(denial, Denial::MissingToken) => "Bearer".to_string(),
            _ => "Bearer error=\"invalid_token\"".to_string(),
        };
        headers.push(("WWW-Authenticate", value));
    }
    if let Denial::RateLimited {
        per_minute,
        retry_after_secs,
        ..
    } = denial
    {
        headers.push(("Retry-After", retry_after_secs.max(&1).to_string()));
        headers.push(("X-RateLimit-Limit", per_minute.to_string()));
        headers.push(("X-RateLimit-Remaining", "0".to_string()));
    }
    if matches!(denial, Denial::SharedStateUnavailable) {
        headers.push(("Retry-After", "1".to_string()));
    }
    if let Denial::MethodNotAllowed { allow } = denial {
        headers.push(("Allow", allow.to_string()));
    }
    let body = match style.error_format {
        ErrorFormat::Simple => {
            let mut b = String::from("{\"error\":");
            push_quoted(&mut b, &message);
            b.push('}');
            b
        }
        ErrorFormat::Dto => {
            let mut b = String::with_capacity(96);
            let _ = write!(b, "{{\"statusCode\":{status},\"message\":");
            push_quoted(&mut b, &message);
            b.push_str(",\"error\":");
            push_quoted(&mut b, reason_phrase(status));
            if let Denial::InvalidRequest(r) = denial {
                push_errors(&mut b, r);
            }
            b.push('}');
            b
        }
    };
    ErrorResponse { status, headers, body }
}

/// `,"errors":[{"in": ..., "pointer": ..., "message": ...}, ...]` of a step-7a refusal.
fn push_errors(b: &mut String, r: &Rejection) {
    b.push_str(",\"errors\":[");
    for (i, e) in r.errors.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push_str("{\"in\":");
        push_quoted(b, e.location.json_in());
        b.push_str(",\"pointer\":");
        push_quoted(b, &e.pointer);
        b.push_str(",\"message\":");
        push_quoted(b, &e.message);
        b.push('}');
    }
    b.push(']');
}

/// The standard reason phrase of `status` (the `error` field of the DTO body), as the
/// `http` crate names it.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn rejection(reason: CheckReason) -> Rejection {
        Rejection {
            status: reason.status(),
            reason,
            message: "Invalid request body: /email is required".into(),
            errors: vec![crate::openapi::FieldError {
                location: crate::openapi::Location::Body,
                pointer: "/email".into(),
                message: "is required".into(),
            }],
            locations: Default::default(),
        }
    }

    fn all() -> Vec<Denial> {
        vec![
            Denial::BadPath(PathProblem::DotSegment),
            Denial::BadMethod(MethodProblem::Lowercase),
            Denial::BodyTooLarge { limit: 10 },
            Denial::NoRoute,
            Denial::MethodNotAllowed {
                allow: "GET, HEAD".into(),
            },
            Denial::InvalidRequest(Box::new(rejection(CheckReason::InvalidRequest))),
            Denial::InvalidRequest(Box::new(rejection(CheckReason::UnsupportedMediaType))),
            Denial::MissingToken,
            Denial::InvalidToken(TokenError::Expired),
            Denial::MissingApiKey,
            Denial::BadApiKeyFormat,
            Denial::UnknownApiKey,
            Denial::KeyDisabled,
            Denial::UnknownPartner,
            Denial::RevokedKey,
            Denial::IpDenied,
            Denial::InactivePartner,
            Denial::RateLimited {
                limit: "partner".into(),
                per_minute: 100,
                retry_after_secs: 1,
            },
            Denial::OrgForbidden,
            Denial::UpstreamUnavailable,
            Denial::UpstreamTimeout,
            Denial::SharedStateUnavailable,
            Denial::Internal,
            Denial::BadRequest,
        ]
    }

    #[test]
    fn every_denial_renders_an_error_dto() {
        for d in all() {
            let r = render(
                &d,
                AnswerStyle {
                    auth: AuthKind::Partner,
                    ..Default::default()
                },
            );
            let v: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["statusCode"], r.status, "{d:?}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{d:?}");
            assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{d:?}");
            let www = r.headers.iter().any(|(k, _)| *k == "WWW-Authenticate");
            assert_eq!(www, r.status == 401, "{d:?}");
        }
    }

    #[test]
    fn statuses_and_reasons() {
        let expected = [
            (400, "bad_path"),
            (400, "bad_method"),
            (413, "body_too_large"),
            (404, "no_route"),
            (405, "method_not_allowed"),
            (400, "invalid_request"),
            (415, "unsupported_media_type"),
            (401, "missing_token"),
            (401, "invalid_token"),
            (401, "missing_token"),
            (401, "invalid_token"),
            (401, "invalid_token"),
            (403, "key_disabled"),
            (401, "unknown_partner"),
            (401, "revoked_key"),
            (403, "ip_denied"),
            (401, "inactive_partner"),
            (429, "rate_limited"),
            (403, "org_forbidden"),
            (502, "upstream_unavailable"),
            (504, "upstream_timeout"),
            (503, "shared_state_unavailable"),
            (500, "internal_error"),
            (400, "bad_request"),
        ];
        for (d, (status, reason)) in all().iter().zip(expected) {
            assert_eq!((d.status(), d.reason().as_str()), (status, reason), "{d:?}");
        }
    }

    #[test]
    fn step_7a_refusals_list_their_errors_and_405_says_allow() {
        let d = Denial::InvalidRequest(Box::new(rejection(CheckReason::InvalidRequest)));
        let r = render(&d, AnswerStyle::default());
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["statusCode"], 400);
        assert_eq!(v["message"], "Invalid request body: /email is required");
        assert_eq!(
            v["errors"],
            serde_json::json!([{"in": "body", "pointer": "/email", "message": "is required"}])
        );
        let simple = AnswerStyle {
            error_format: ErrorFormat::Simple,
            ..Default::default()
        };
        assert_eq!(
            render(&d, simple).body,
            r#"{"error":"Invalid request body: /email is required"}"#
        );
        let r = render(
            &Denial::MethodNotAllowed {
                allow: "GET, HEAD".into(),
            },
            AnswerStyle::default(),
        );
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("Allow", "GET, HEAD".to_string())));
    }

    #[test]
    fn reason_indexes_follow_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    #[test]
    fn www_authenticate_by_scheme() {
        let bearer = AnswerStyle {
            auth: AuthKind::Partner,
            ..Default::default()
        };
        let www = |d: &Denial, s| {
            render(d, s)
                .headers
                .into_iter()
                .find(|(k, _)| *k == "WWW-Authenticate")
                .unwrap()
                .1
        };
        assert_eq!(www(&Denial::MissingToken, bearer), "Bearer");
        assert_eq!(www(&Denial::RevokedKey, bearer), "Bearer error=\"invalid_token\"");
        let key = AnswerStyle {
            auth: AuthKind::ApiKey,
            error_format: ErrorFormat::Simple,
            api_key_header: "X-Org-Key",
        };
        assert_eq!(www(&Denial::MissingApiKey, key), "ApiKey header=\"X-Org-Key\"");
    }

    #[test]
    fn simple_format_and_seed_messages() {
        let key = AnswerStyle {
            auth: AuthKind::ApiKey,
            error_format: ErrorFormat::Simple,
            api_key_header: "X-API-Key",
        };
        assert_eq!(
            render(&Denial::MissingApiKey, key).body,
            r#"{"error":"Missing X-API-Key header"}"#
        );
        assert_eq!(
            render(&Denial::BadApiKeyFormat, key).body,
            r#"{"error":"Invalid API key format"}"#
        );
        assert_eq!(
            render(&Denial::UnknownApiKey, key).body,
            r#"{"error":"Invalid API key"}"#
        );
        let disabled = render(&Denial::KeyDisabled, key);
        assert_eq!(
            (disabled.status, disabled.body.as_str()),
            (403, r#"{"error":"API key is disabled"}"#)
        );
    }

    #[test]
    fn rate_limited_headers() {
        let r = render(
            &Denial::RateLimited {
                limit: "login-links".into(),
                per_minute: 30,
                retry_after_secs: 0,
            },
            AnswerStyle::default(),
        );
        assert!(r.headers.contains(&("Retry-After", "1".into())));
        assert!(r.headers.contains(&("X-RateLimit-Limit", "30".into())));
        assert!(r.headers.contains(&("X-RateLimit-Remaining", "0".into())));
    }
}
