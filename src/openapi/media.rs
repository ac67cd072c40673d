//! Media types: a request's `Content-Type` against an operation's `content` keys.
//!
//! Compared on the essence (`type/subtype`, ASCII-case-insensitive); parameters such as
//! `charset` are ignored (docs/reference.md, the OpenAPI section). A key may be a range (`application/*`, `*/*`); the
//! most specific key that matches wins, as OpenAPI says.

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

    /// Whether a JSON body could match it (`application/json`, `*/*+json`, or a range that
    /// includes them): only then is a schema checked on a held body.
    pub(crate) fn may_be_json(&self) -> bool {
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", _) => true,
            ("application", s) => s == "*" || s == "json" || s.ends_with("+json"),
            _ => false,
        }
    }
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
    fn json_ness() {
        assert!(is_json("application", "json"));
        assert!(is_json("application", "merge-patch+json"));
        assert!(!is_json("text", "json"));
        assert!(MediaRange::parse("application/*").unwrap().may_be_json());
        assert!(MediaRange::parse("application/problem+json").unwrap().may_be_json());
        assert!(!MediaRange::parse("multipart/form-data").unwrap().may_be_json());
    }
}
