//! The JOSE header of a compact JWS (docs/reference.md#pipeline, step 2): its algorithm and
//! key id, parsed strictly.
//!
//! A gateway's tokens come from a handful of issuers, each writing the same header on every
//! token, so the header text repeats while signatures and claims differ. Each worker thread
//! remembers the last header text it parsed successfully ([`with_header`]): a token whose
//! header is the same text, byte for byte, reuses that parse instead of a base64 decode and
//! a JSON parse again (about 2.5k instructions of a bad-signature refusal). The parse is a
//! function of the text alone, so the memo cannot go stale: keys, allowed algorithms and
//! everything else are checked by the caller on every token. Only good parses are kept, so
//! a malformed header is parsed, and refused, every time; the memo is per thread (no lock,
//! no sharing) and one entry long (no growth).

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// What the header says, once it passed every check of its own.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JoseHeader {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<Box<str>>,
}

/// Why a header was refused (the caller words it for the partner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Not base64url.
    NotBase64,
    /// Not a JSON object with a string `alg` (and a string `kid`, if any), or a member twice.
    NotAHeader,
    /// `crit` or `b64`: extensions this gateway does not implement.
    Critical,
    /// An `alg` no JWS library here knows.
    UnknownAlgorithm,
}

/// The last header text this thread parsed successfully, with its parse.
struct Remembered {
    text: Box<str>,
    header: JoseHeader,
}

thread_local! {
    static LAST: RefCell<Option<Remembered>> = const { RefCell::new(None) };
}

/// `use_it` applied to the parse of the base64url header `h64`: this thread's remembered
/// parse when the text is the same, else a fresh one (remembered if good).
pub(crate) fn with_header<R>(h64: &str, use_it: impl FnOnce(&JoseHeader) -> R) -> Result<R, HeaderProblem> {
    LAST.with_borrow_mut(|last| {
        if let Some(r) = last.as_ref().filter(|r| *r.text == *h64) {
            return Ok(use_it(&r.header));
        }
        let header = parse(h64)?;
        let out = use_it(&header);
        *last = Some(Remembered {
            text: h64.into(),
            header,
        });
        Ok(out)
    })
}

#[derive(Deserialize)]
struct Wire {
    alg: String,
    #[serde(default, deserialize_with = "opt_string")]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<de::IgnoredAny>,
    #[serde(default)]
    b64: Option<de::IgnoredAny>,
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Every check the header makes alone, in order: base64url, a JSON object (not an array)
/// with no member twice (serde refuses a duplicate field), no `crit` or `b64`, a known
/// algorithm.
fn parse(h64: &str) -> Result<JoseHeader, HeaderProblem> {
    let json = URL_SAFE_NO_PAD.decode(h64).map_err(|_| HeaderProblem::NotBase64)?;
    // RFC 7515 4: a JSON object. serde would also read a struct from an array (`["HS256"]`).
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(HeaderProblem::NotAHeader);
    }
    let wire: Wire = serde_json::from_slice(&json).map_err(|_| HeaderProblem::NotAHeader)?;
    if wire.crit.is_some() || wire.b64.is_some() {
        return Err(HeaderProblem::Critical);
    }
    let alg = wire.alg.parse().map_err(|_| HeaderProblem::UnknownAlgorithm)?;
    Ok(JoseHeader {
        alg,
        kid: wire.kid.map(String::into_boxed_str),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn remembered() -> Option<Box<str>> {
        LAST.with_borrow(|l| l.as_ref().map(|r| r.text.clone()))
    }

    // Fault model: the memo answers for a text it never parsed (a prefix, a different kid).
    // Must hold: every answer equals a fresh parse of the very text asked about.
    #[test]
    fn a_remembered_parse_answers_only_for_the_same_text() {
        LAST.set(None);
        let one = b64(r#"{"alg":"HS256","kid":"hs-1"}"#);
        let two = b64(r#"{"alg":"HS256","kid":"hs-2"}"#);
        let kid = |h: &JoseHeader| h.kid.clone();
        assert_eq!(with_header(&one, kid), Ok(Some("hs-1".into())));
        assert_eq!(remembered().as_deref(), Some(one.as_str()));
        assert_eq!(with_header(&one, kid), Ok(Some("hs-1".into())));
        assert_eq!(with_header(&two, kid), Ok(Some("hs-2".into())));
        assert_eq!(remembered().as_deref(), Some(two.as_str()));
        // a prefix of the remembered text is a different text (and here not even base64url
        // of a whole header)
        assert!(with_header(&two[..two.len() - 2], kid).is_err());
        let no_kid = b64(r#"{"alg":"ES256","typ":"JWT"}"#);
        let parsed = with_header(&no_kid, Clone::clone).unwrap();
        assert_eq!((parsed.alg, parsed.kid), (Algorithm::ES256, None));
    }

    // Fault model: a refused header is remembered, and a later token with the same header
    // skips the refusal. Must hold: refusals are recomputed and never replace the memo.
    #[test]
    fn refused_headers_are_refused_every_time_and_never_remembered() {
        LAST.set(None);
        let good = b64(r#"{"alg":"HS256","kid":"hs-1"}"#);
        with_header(&good, |_| ()).unwrap();
        for (text, want) in [
            (
                b64(r#"{"alg":"HS256","kid":"hs-1","crit":["x"]}"#),
                HeaderProblem::Critical,
            ),
            (b64(r#"{"alg":"HS256","b64":false}"#), HeaderProblem::Critical),
            (b64(r#"{"alg":"HS256","alg":"HS256"}"#), HeaderProblem::NotAHeader),
            (b64(r#"{"alg":"HS256","kid":7}"#), HeaderProblem::NotAHeader),
            (b64(r#"["HS256"]"#), HeaderProblem::NotAHeader),
            (b64(r#"{"alg":"none"}"#), HeaderProblem::UnknownAlgorithm),
            ("e30*".to_string(), HeaderProblem::NotBase64),
        ] {
            for _ in 0..2 {
                assert_eq!(with_header(&text, |_| ()), Err(want), "{text}");
            }
        }
        assert_eq!(remembered().as_deref(), Some(good.as_str()));
    }
}
