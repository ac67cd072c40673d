//! Path hygiene (docs/reference.md#pipeline, step 0): reject paths that different servers could read
//! differently, before anything else looks at them. The path is never rewritten.

pub use crate::path_text::decode_segment;
use crate::path_text::hex;

/// Why a path was rejected (for the log line; the client sees one generic message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    EncodedSeparator,
    EncodedNul,
    Backslash,
    BadPercentEscape,
    /// The percent-decoded path is not valid UTF-8 (overlong `%c0%ae`, stray bytes):
    /// servers disagree on what such bytes mean, so none of them gets to guess.
    InvalidUtf8,
    /// A `;`, raw or `%3B`, while `[server] allow_path_semicolons` is off: Tomcat, Jetty and
    /// Spring cut `;...` off a segment before routing, so `/partner;x/...` would be routed
    /// by the gateway as one path and by the upstream as another.
    Semicolon,
    /// A percent-encoded unreserved character (`%65` for `e`) where the route does not
    /// capture it: RFC 3986 says producers should not encode them, and routers disagree on
    /// whether `/users/regist%65r` is `register` (Starlette decodes before routing, Express
    /// does not).
    EncodedUnreserved,
}

impl PathProblem {
    /// Words for logs and the error message.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            PathProblem::NotAbsolute => "the path does not start with '/'",
            PathProblem::EmptySegment => "the path has an empty segment ('//')",
            PathProblem::DotSegment => "the path has a '.' or '..' segment",
            PathProblem::EncodedSeparator => "the path has an encoded '/' or '\\' (%2F, %5C)",
            PathProblem::EncodedNul => "the path has an encoded NUL (%00)",
            PathProblem::Backslash => "the path has a backslash",
            PathProblem::BadPercentEscape => "the path has a malformed percent-escape",
            PathProblem::InvalidUtf8 => "the path does not decode to valid UTF-8",
            PathProblem::Semicolon => "the path has a ';' (or %3B): path parameters are not accepted",
            PathProblem::EncodedUnreserved => {
                "the path percent-encodes a character that is never encoded (a letter, digit, '-', '.', '_' or '~')"
            }
        }
    }
}

/// The path and the query (after the first `?`, if any) of a request target, in one scan.
pub fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

/// The query of a request target (after the first `?`), if it has one.
pub fn query_of(target: &[u8]) -> Option<&[u8]> {
    split_target(target).1
}

/// The path part of a request target (everything before the first `?`).
pub fn path_of(target: &[u8]) -> &[u8] {
    split_target(target).0
}

/// Checks a raw path. On success the same bytes may be matched and forwarded as they are.
pub fn check(path: &[u8]) -> Result<(), PathProblem> {
    let Some(rest) = path.strip_prefix(b"/") else {
        return Err(PathProblem::NotAbsolute);
    };
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            if last {
                break; // "/" itself, or one trailing slash
            }
            return Err(PathProblem::EmptySegment);
        }
        check_segment(seg)?;
    }
    Ok(())
}

/// Bytes of a path segment that no server reads in two ways: ASCII letters, digits, `-`,
/// `_` and `~` (RFC 3986's unreserved set without `.`).
const PLAIN_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'~';
        b += 1;
    }
    t
};

/// The common case in one pass: `/`, then plain segments (see `PLAIN_BYTE`) separated by
/// single slashes, at most one trailing. Such a path passes [`check`] and
/// [`check_semicolons`] whatever their settings, so step 0 skips them; anything else
/// (a dot, an escape, a `;`, `//`) takes the full checks.
pub fn is_plain(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    let mut after_slash = true;
    for &b in rest {
        if b == b'/' {
            if after_slash {
                return false;
            }
            after_slash = true;
        } else if PLAIN_BYTE[usize::from(b)] {
            after_slash = false;
        } else {
            return false;
        }
    }
    true
}

/// One segment: no backslash, no encoded separator or NUL, well-formed escapes, not a dot
/// segment (also not before a `;` path parameter, which Tomcat and Spring strip before
/// resolving dots: `..;x` is `..` to them), and valid UTF-8 once decoded.
fn check_segment(seg: &[u8]) -> Result<(), PathProblem> {
    let mut decoded_len = 0usize;
    let mut dots = 0usize;
    // (decoded length, dots) of the part before the first raw ';'
    let mut before_param: Option<(usize, usize)> = None;
    let mut plain = true;
    let mut i = 0;
    while i < seg.len() {
        let b = match seg[i] {
            b'\\' => return Err(PathProblem::Backslash),
            b'%' => {
                let hi = seg.get(i + 1).and_then(|&c| hex(c));
                let lo = seg.get(i + 2).and_then(|&c| hex(c));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathProblem::BadPercentEscape);
                };
                i += 2;
                plain = false;
                match hi << 4 | lo {
                    b'/' | b'\\' => return Err(PathProblem::EncodedSeparator),
                    0 => return Err(PathProblem::EncodedNul),
                    other => other,
                }
            }
            b';' if before_param.is_none() => {
                before_param = Some((decoded_len, dots));
                b';'
            }
            other => other,
        };
        if b == b'.' {
            dots += 1;
        }
        if !b.is_ascii() {
            plain = false;
        }
        decoded_len += 1;
        i += 1;
    }
    let is_dots = |len: usize, dots: usize| dots == len && (len == 1 || len == 2);
    if is_dots(decoded_len, dots) || before_param.is_some_and(|(len, dots)| is_dots(len, dots)) {
        return Err(PathProblem::DotSegment);
    }
    if !plain && std::str::from_utf8(&decode_segment(seg)).is_err() {
        return Err(PathProblem::InvalidUtf8);
    }
    Ok(())
}

/// The `;` rule of docs/reference.md#pipeline (step 0), after [`check`]. With `allow` off,
/// any raw `;` or `%3B` (any case) is refused. With it on, path parameters pass and routing
/// reads each segment up to its first raw `;` ([`before_params`]), as Tomcat and Spring do;
/// a segment with nothing before its `;` (`/a/;x/b`) is then an empty segment and refused
/// like `//`. `%3B` stays data either way (those servers decode it after cutting).
pub fn check_semicolons(path: &[u8], allow: bool) -> Result<(), PathProblem> {
    if !allow {
        let encoded = path
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'3' && (w[2] | 0x20) == b'b');
        if encoded || path.contains(&b';') {
            return Err(PathProblem::Semicolon);
        }
        return Ok(());
    }
    let body = path.strip_prefix(b"/").unwrap_or(path);
    if body.split(|&b| b == b'/').any(|seg| seg.first() == Some(&b';')) {
        return Err(PathProblem::EmptySegment);
    }
    Ok(())
}

/// Whether `seg` percent-encodes an unreserved character (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`,
/// any case of the hex digits).
pub fn encodes_unreserved(seg: &[u8]) -> bool {
    seg.windows(3).any(|w| {
        w[0] == b'%'
            && matches!((hex(w[1]), hex(w[2])), (Some(hi), Some(lo))
                if { let c = hi << 4 | lo; c.is_ascii_alphanumeric() || b"-._~".contains(&c) })
    })
}

/// A segment's part before its first raw `;` (the whole segment when it has none): what
/// Tomcat, Jetty and Spring route on, and so what the gateway matches and captures.
pub fn before_params(seg: &[u8]) -> &[u8] {
    match seg.iter().position(|&b| b == b';') {
        Some(i) => &seg[..i],
        None => seg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn accepted_paths() {
        for ok in [
            "/",
            "/a",
            "/a/",
            "/a/b",
            "/partner/v1/orgs/by-external-id/cust%20omer-1",
            "/a/%2e%2e%2e",
            "/a/...",
            "/a/.hidden",
            "/a/b.c",
            "/a/%41",
            "/a/%252e%252e",
            "/a;b",
            "/a/b;c/d",
            "/a/;x",
            "/a/...;x",
            "/a/x..;y",
            "/a/caf%C3%A9",
            "/a/%E2%82%AC",
            "/a/%3B..",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn the_fast_path_takes_only_plain_paths() {
        for plain in ["/", "/a", "/a/", "/partner/v1/orgs/a1b2-c3/members", "/A_b~c/-"] {
            assert!(is_plain(plain.as_bytes()), "{plain}");
        }
        for full in [
            "",
            "a",
            "//",
            "/a//",
            "//a",
            "/a/./b",
            "/a.json",
            "/a;b",
            "/%41",
            "/a\\b",
            "/caf\u{e9}",
            "/a b",
        ] {
            assert!(!is_plain(full.as_bytes()), "{full}");
        }
    }

    #[test]
    fn rejected_paths() {
        use PathProblem::*;
        let cases = [
            ("", NotAbsolute),
            ("a/b", NotAbsolute),
            ("*", NotAbsolute),
            ("http://x/a", NotAbsolute),
            ("//a", EmptySegment),
            ("/a//b", EmptySegment),
            ("/a//", EmptySegment),
            ("/a/b//x", EmptySegment),
            ("/..", DotSegment),
            ("/.", DotSegment),
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/..", DotSegment),
            ("/a/%2e%2e/b", DotSegment),
            ("/a/%2E./b", DotSegment),
            ("/a/.%2e", DotSegment),
            ("/a/%2e", DotSegment),
            ("/a/%2e/", DotSegment),
            ("/a%2Fb", EncodedSeparator),
            ("/a%2fb", EncodedSeparator),
            ("/a%5Cb", EncodedSeparator),
            ("/a%5cb", EncodedSeparator),
            ("/a%00", EncodedNul),
            ("/a\\b", Backslash),
            ("/a\\..\\b", Backslash),
            ("/a%", BadPercentEscape),
            ("/a%2", BadPercentEscape),
            ("/a%zz", BadPercentEscape),
            ("/a/..;/b", DotSegment),
            ("/a/..;", DotSegment),
            ("/a/.;x/b", DotSegment),
            ("/a/%2e%2e;p/b", DotSegment),
            ("/a/%2E.;jsessionid=1", DotSegment),
            ("/a/..;x;y", DotSegment),
            ("/a/%c0%ae%c0%ae/b", InvalidUtf8),
            ("/a/%ff", InvalidUtf8),
            ("/a/%C3", InvalidUtf8),
            ("/a/%80x", InvalidUtf8),
        ];
        for (path, want) in cases {
            assert_eq!(check(path.as_bytes()), Err(want), "{path}");
        }
    }

    #[test]
    fn encoded_unreserved_characters_are_found_in_any_case() {
        for yes in [
            "%41",
            "%5a",
            "%61",
            "%7A",
            "%30",
            "%39",
            "%2D",
            "%2e",
            "%5F",
            "%7e",
            "/users/regist%65r",
        ] {
            assert!(encodes_unreserved(yes.as_bytes()), "{yes}");
        }
        // reserved or outside ASCII: encoding them is how they are sent
        for no in [
            "",
            "abc",
            "%20",
            "%2F",
            "%3B",
            "%25",
            "%40",
            "%C3%A9",
            "%7F",
            "%",
            "%4",
            "%zz",
            "a-b_c.d~e",
        ] {
            assert!(!encodes_unreserved(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn query_is_not_part_of_the_path() {
        assert_eq!(path_of(b"/a/b?x=../..//"), b"/a/b");
        assert_eq!(check(path_of(b"/a?x=%2F")), Ok(()));
    }

    #[test]
    fn semicolons_are_refused_unless_allowed() {
        for bad in [
            "/a;b",
            "/a/b;c/d",
            "/a/;x",
            "/a%3Bb",
            "/a%3bb",
            "/partner;x/v1",
            "/a/x;",
        ] {
            assert_eq!(
                check_semicolons(bad.as_bytes(), false),
                Err(PathProblem::Semicolon),
                "{bad}"
            );
        }
        for ok in ["/", "/a", "/a/b/", "/a%3", "/a%33b", "/a%2Bb"] {
            assert_eq!(check_semicolons(ok.as_bytes(), false), Ok(()), "{ok}");
        }
        for ok in ["/a;b", "/a/b;c/d", "/a%3Bb", "/a;x=1;y=2/", "/a/b;/c"] {
            assert_eq!(check_semicolons(ok.as_bytes(), true), Ok(()), "{ok}");
        }
        for empty in ["/;x", "/a/;x", "/a/;x/b", "/a/;"] {
            assert_eq!(
                check_semicolons(empty.as_bytes(), true),
                Err(PathProblem::EmptySegment),
                "{empty}"
            );
        }
    }

    #[test]
    fn params_are_cut_at_the_first_raw_semicolon() {
        assert_eq!(before_params(b"o-1;jsessionid=x;y"), b"o-1");
        assert_eq!(before_params(b"o-1%3Bx"), b"o-1%3Bx");
        assert_eq!(before_params(b"plain"), b"plain");
        assert_eq!(before_params(b";x"), b"");
    }

    #[test]
    fn decoding() {
        assert_eq!(&*decode_segment(b"abc"), b"abc");
        assert_eq!(&*decode_segment(b"a%20b%2D"), b"a b-");
        assert!(matches!(decode_segment(b"plain"), Cow::Borrowed(_)));
    }
}

#[cfg(test)]
pub(crate) mod props {
    use super::*;
    use proptest::prelude::*;

    /// Paths built from the atoms hygiene has to get right (dots, escapes, `;`, bytes).
    pub(crate) fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
        let atom = prop_oneof![
            Just(b"/".to_vec()),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            Just(b"%".to_vec()),
            Just(b"%2e".to_vec()),
            Just(b"%2E".to_vec()),
            Just(b"%2f".to_vec()),
            Just(b"%5C".to_vec()),
            Just(b"%00".to_vec()),
            Just(b"\\".to_vec()),
            Just(b";".to_vec()),
            Just(b"%c0%ae".to_vec()),
            Just(b"%C3%A9".to_vec()),
            "[a-z0-9]{1,4}".prop_map(|s| s.into_bytes()),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(atom, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whatever the bytes, `check` answers, and what it accepts has none of the
        /// forbidden shapes.
        #[test]
        fn accepted_paths_are_clean(p in path_bytes()) {
            if check(&p).is_ok() {
                prop_assert!(p.starts_with(b"/"));
                prop_assert!(!p.contains(&b'\\'));
                let lower = p.to_ascii_lowercase();
                for bad in [&b"%2f"[..], b"%5c", b"%00"] {
                    prop_assert!(!lower.windows(3).any(|w| w == bad));
                }
                let body = &p[1..];
                let segs: Vec<&[u8]> = body.split(|&b| b == b'/').collect();
                for (i, seg) in segs.iter().enumerate() {
                    if seg.is_empty() {
                        prop_assert_eq!(i + 1, segs.len(), "empty segment not at the end");
                        continue;
                    }
                    let d = decode_segment(seg);
                    prop_assert!(&*d != b"." && &*d != b"..");
                    prop_assert!(std::str::from_utf8(&d).is_ok());
                    let before = seg.split(|&b| b == b';').next().unwrap_or_default();
                    let d = decode_segment(before);
                    prop_assert!(&*d != b"." && &*d != b"..", "dot segment before ';'");
                }
            }
        }

        /// Fault model: the one-pass fast path waves through a path the full checks
        /// refuse. Must hold: a plain path passes `check` and `check_semicolons` under
        /// either setting, on any bytes.
        #[test]
        fn plain_paths_pass_every_full_check(p in path_bytes()) {
            if is_plain(&p) {
                prop_assert_eq!(check(&p), Ok(()));
                prop_assert_eq!(check_semicolons(&p, false), Ok(()));
                prop_assert_eq!(check_semicolons(&p, true), Ok(()));
            }
        }
    }
}
