//! Media types: a request's `Content-Type` against an operation's `content` keys.
//!
//! Compared on the essence (`type/subtype`, ASCII-case-insensitive). A key may be a range
//! (`application/*`, `*/*`); the most specific key that matches wins, as OpenAPI says.
//!
//! Of the parameters only `charset` counts (docs/reference.md, the OpenAPI section): on a body
//! the gateway reads (JSON, form), a `charset` other than `utf-8` is refused, because
//! Express's body-parser and Django decode the bytes with the named charset, and `utf-7` turns
//! a string the gateway checked into new keys. Other parameters pass.

/// A `content` key, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaRange {
    kind: String,
    subtype: String,
}

impl MediaRange {
    /// Parses `application/json; charset=utf-8` (parameters dropped); `None` when it is not
    /// `type/subtype`.
    pub(crate) fn parse(text: &str) -> Option<MediaRange> {
        let (kind, subtype) = essence(text.as_bytes())?;
        if kind == "*" && subtype != "*" {
            return None;
        }
        Some(MediaRange { kind, subtype })
    }

    /// 2 exact, 1 `type/*`, 0 `*/*`; `None` when it does not match.
    pub(crate) fn specificity(&self, kind: &str, subtype: &str) -> Option<u8> {
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", "*") => Some(0),
            (k, "*") if k == kind => Some(1),
            (k, s) if k == kind && s == subtype => Some(2),
            _ => None,
        }
    }

    /// What the gateway can read of a body of this exact type; a range (`application/*`,
    /// `*/*`) is [`BodyKind::Opaque`]: its bodies may be anything.
    pub(crate) fn kind(&self) -> BodyKind {
        body_kind(&self.kind, &self.subtype)
    }

    /// Whether it is a range (`type/*`, `*/*`) rather than one media type.
    pub(crate) fn is_range(&self) -> bool {
        self.subtype == "*"
    }
}

/// How the gateway reads a body of some media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `application/json`, `application/*+json`: parsed and checked against a schema.
    Json,
    /// `application/x-www-form-urlencoded`: parsed as the upstream's form parser does.
    Form,
    /// Anything else (`multipart/*`, `text/plain`, a range): the gateway cannot check it.
    Opaque,
}

/// The [`BodyKind`] of a request's (lower-cased) media type.
pub(crate) fn body_kind(kind: &str, subtype: &str) -> BodyKind {
    if is_json(kind, subtype) {
        BodyKind::Json
    } else if kind == "application" && subtype == "x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Opaque
    }
}

/// Checks a `Content-Type` value's `charset` parameter: absent, or `utf-8` in any case,
/// quoted or not. Every `charset` parameter counts (a second one must not change the
/// answer); a parameter that cannot be read is not a charset and passes, as other
/// parameters do. `Err` names the charset that was given.
pub(crate) fn check_charset(value: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(value);
    let mut params = text.split(';');
    params.next(); // the essence
    for param in params {
        let Some((name, raw)) = param.split_once('=') else {
            continue;
        };
        if !name.trim_matches([' ', '\t']).eq_ignore_ascii_case("charset") {
            continue;
        }
        let charset = unquote(raw.trim_matches([' ', '\t']));
        if !charset.eq_ignore_ascii_case("utf-8") {
            return Err(format!(
                "charset {:?} is not supported: send the body as UTF-8 (charset=utf-8, or none)",
                super::wording::clip(&charset, 40)
            ));
        }
    }
    Ok(())
}

/// A parameter value without its quotes and backslash escapes (RFC 9110 quoted-string).
fn unquote(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix('"') else {
        return raw.to_string();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The lower-cased `(type, subtype)` of a `Content-Type` value; `None` when malformed.
pub(crate) fn essence(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let main = text.split(';').next().unwrap_or("").trim_matches([' ', '\t']);
    let (kind, subtype) = main.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
    };
    if !token(kind) || !token(subtype) {
        return None;
    }
    Some((kind.to_ascii_lowercase(), subtype.to_ascii_lowercase()))
}

/// Whether a request's media type is JSON (`application/json`, `application/*+json`).
pub(crate) fn is_json(kind: &str, subtype: &str) -> bool {
    kind == "application" && (subtype == "json" || subtype.ends_with("+json"))
}

/// The index of the most specific range matching `(kind, subtype)`; the first on a tie.
pub(crate) fn best_match<'a>(
    ranges: impl IntoIterator<Item = &'a MediaRange>,
    kind: &str,
    subtype: &str,
) -> Option<usize> {
    let mut best: Option<(usize, u8)> = None;
    for (i, r) in ranges.into_iter().enumerate() {
        if let Some(s) = r.specificity(kind, subtype) {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Option<(String, String)> {
        essence(s.as_bytes())
    }

    #[test]
    fn essences() {
        let json = Some(("application".to_string(), "json".to_string()));
        assert_eq!(e("application/json"), json);
        assert_eq!(e("Application/JSON; charset=UTF-8"), json);
        assert_eq!(e("  application/json  ;x=y"), json);
        assert_eq!(e("application/json ; charset=utf-8"), json);
        for bad in [
            "",
            "json",
            "application/",
            "/json",
            "application/json/x",
            "a b/c",
            "application/js\"on",
        ] {
            assert_eq!(e(bad), None, "{bad:?}");
        }
        assert_eq!(essence(b"application/\xffjson"), None);
    }

    #[test]
    fn most_specific_wins() {
        let ranges: Vec<MediaRange> = ["*/*", "application/*", "application/json", "text/plain"]
            .iter()
            .map(|r| MediaRange::parse(r).unwrap())
            .collect();
        assert_eq!(best_match(&ranges, "application", "json"), Some(2));
        assert_eq!(best_match(&ranges, "application", "xml"), Some(1));
        assert_eq!(best_match(&ranges, "image", "png"), Some(0));
        assert_eq!(best_match(&ranges[2..], "text", "html"), None);
        assert_eq!(MediaRange::parse("*/json"), None);
    }

    #[test]
    fn body_kinds() {
        assert!(is_json("application", "json"));
        assert!(is_json("application", "merge-patch+json"));
        assert!(!is_json("text", "json"));
        let kind = |r: &str| MediaRange::parse(r).unwrap().kind();
        assert_eq!(kind("application/problem+json"), BodyKind::Json);
        assert_eq!(kind("Application/X-WWW-Form-Urlencoded"), BodyKind::Form);
        for opaque in ["application/*", "*/*", "multipart/form-data", "text/plain"] {
            assert_eq!(kind(opaque), BodyKind::Opaque, "{opaque}");
        }
        assert!(MediaRange::parse("application/*").unwrap().is_range());
        assert!(MediaRange::parse("*/*").unwrap().is_range());
        assert!(!MediaRange::parse("multipart/form-data").unwrap().is_range());
    }

    #[test]
    fn charsets() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/json; charset = Utf-8 ",
            "application/json; CHARSET=\"utf\\-8\"",
            "application/json; version=2; profile=\"x;y\"",
            "application/json; charset",
        ] {
            assert_eq!(check_charset(ok.as_bytes()), Ok(()), "{ok:?}");
        }
        for bad in [
            "application/json; charset=utf-7",
            "application/json; charset=\"UTF-7\"",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf8",
            "application/json; charset=",
            "application/json; charset=utf-8; charset=utf-7",
            "application/x-www-form-urlencoded; charset=latin1",
        ] {
            assert!(check_charset(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_charset(b"application/json; charset=utf-7"),
            Err("charset \"utf-7\" is not supported: send the body as UTF-8 (charset=utf-8, or none)".into())
        );
    }
}
