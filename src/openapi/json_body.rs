//! A JSON body read as the upstream's JSON parser reads it (docs/reference.md, the OpenAPI
//! section), before serde_json parses it for the schema check.
//!
//! Two differences matter. A UTF-8 byte order mark: body-parser (Express) strips it, and a
//! parser that kept it would refuse the body; the gateway skips it for validation and
//! forwards the body as received. A lone surrogate escape (`"\ud800"`, or a high surrogate
//! not followed by a low one): `JSON.parse` and Python's `json` accept it, serde_json
//! refuses it; the gateway validates it as U+FFFD, the replacement character, so such a body
//! is checked instead of refused (its length in characters is the same).

use std::borrow::Cow;

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The body as the schema check parses it: without a leading BOM, every lone surrogate
/// escape replaced by `\ufffd`. Borrows when there is nothing to change (the common case:
/// one scan for a `\u` that starts with `d`/`D`).
pub(crate) fn for_validation(body: &[u8]) -> Cow<'_, [u8]> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    if !has_surrogate_escape(body) {
        return Cow::Borrowed(body);
    }
    Cow::Owned(replace_lone_surrogates(body))
}

/// Whether the text may hold a `\uD800`-`\uDFFF` escape (a quick, conservative scan).
fn has_surrogate_escape(body: &[u8]) -> bool {
    body.windows(3)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D'))
}

/// The value of a `\uXXXX` escape starting at `i` (at the backslash), if it is one.
fn escape_at(body: &[u8], i: usize) -> Option<u16> {
    let hex = body.get(i + 2..i + 6)?;
    if body.get(i..i + 2) != Some(&b"\\u"[..]) || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(hex).ok()?;
    u16::from_str_radix(text, 16).ok()
}

fn is_high(unit: u16) -> bool {
    (0xD800..0xDC00).contains(&unit)
}

fn is_low(unit: u16) -> bool {
    (0xDC00..0xE000).contains(&unit)
}

/// Copies `body`, replacing each escape of a surrogate that has no partner with `\ufffd`.
/// Escapes are read as a JSON parser reads them: a backslash escapes the one character
/// after it, so `\\ud800` is a backslash and the text `ud800`, not an escape. Outside
/// strings a backslash is a syntax error either way, and stays one.
fn replace_lone_surrogates(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        match escape_at(body, i) {
            Some(high) if is_high(high) => match escape_at(body, i + 6).filter(|&low| is_low(low)) {
                // a pair: copied as written
                Some(_) => {
                    out.extend_from_slice(&body[i..i + 12]);
                    i += 12;
                }
                None => {
                    out.extend_from_slice(b"\\ufffd");
                    i += 6;
                }
            },
            Some(low) if is_low(low) => {
                out.extend_from_slice(b"\\ufffd");
                i += 6;
            }
            // another escape (`\\`, `\"`, `\u0041`, ...): the backslash and the character
            // it escapes, so an escaped backslash never starts a `\u` here
            _ => {
                out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                i += 2;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn parsed(body: &str) -> Value {
        serde_json::from_slice(&for_validation(body.as_bytes())).unwrap()
    }

    #[test]
    fn lone_surrogates_become_the_replacement_character() {
        let table = [
            (r#""\ud800""#, json!("\u{fffd}")),
            (r#""\uDBFF""#, json!("\u{fffd}")),
            (r#""\udc00""#, json!("\u{fffd}")),
            (r#""a\ud800b""#, json!("a\u{fffd}b")),
            (r#""\ud800\ud800\udc00""#, json!("\u{fffd}\u{10000}")),
            (r#""\ud800\u0041""#, json!("\u{fffd}A")),
            // found by fuzzing: what follows a high surrogate must be an escape to pair with it
            (r#""\ud800#udc00\ud800""#, json!("\u{fffd}#udc00\u{fffd}")),
            (r#""\udc00\ud800""#, json!("\u{fffd}\u{fffd}")),
            (r#""\ud83d\ude00""#, json!("\u{1f600}")),
            (r#""\\ud800""#, json!("\\ud800")),
            (r#""\\\ud800""#, json!("\\\u{fffd}")),
            (r#"{"\ud800": [1, "\"\udfff"]}"#, json!({"\u{fffd}": [1, "\"\u{fffd}"]})),
        ];
        for (body, want) in table {
            assert_eq!(parsed(body), want, "{body}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(&*for_validation(b"\xEF\xBB\xBF{}"), b"{}");
        assert_eq!(parsed("\u{feff}{\"a\":1}"), json!({"a": 1}));
        // only one, only in front
        assert_eq!(&*for_validation(b"\xEF\xBB\xBF\xEF\xBB\xBF{}"), b"\xEF\xBB\xBF{}");
        assert!(matches!(for_validation(b"{\"a\":\"\\u00e9\"}"), Cow::Borrowed(_)));
    }

    #[test]
    fn what_was_not_json_stays_not_json() {
        for bad in [r"\ud800", r#"{"a": \ud800}"#, r#""\ud80"#, r#""\ud800"#, "\\"] {
            assert!(
                serde_json::from_slice::<Value>(&for_validation(bad.as_bytes())).is_err(),
                "{bad}"
            );
        }
    }

    proptest! {
        /// Text serde_json accepts is left exactly as it was.
        #[test]
        fn valid_json_is_unchanged(s in "[a-z\"\\\\ud8c0-9 ]{0,24}") {
            let body = serde_json::to_vec(&Value::String(s)).unwrap();
            prop_assert_eq!(&*for_validation(&body), &body[..]);
        }

        /// Whatever the bytes, the rewrite never panics and keeps every byte that is not part
        /// of a replaced escape.
        #[test]
        fn never_panics(body in proptest::collection::vec(prop_oneof![Just(b'\\'), Just(b'u'), Just(b'd'), Just(b'8'), Just(b'c'), any::<u8>()], 0..40)) {
            let out = for_validation(&body);
            prop_assert!(out.len() <= body.len() + 6);
        }
    }
}
