//! Path hygiene (CONTRACT §4 step 0): reject paths that different servers could read
//! differently, before anything else looks at them. The path is never rewritten.

use std::borrow::Cow;

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
}

impl PathProblem {
    /// Words for logs and the error message.
    pub fn describe(self) -> &'static str {
        match self {
            PathProblem::NotAbsolute => "the path does not start with '/'",
            PathProblem::EmptySegment => "the path has an empty segment ('//')",
            PathProblem::DotSegment => "the path has a '.' or '..' segment",
            PathProblem::EncodedSeparator => "the path has an encoded '/' or '\\' (%2F, %5C)",
            PathProblem::EncodedNul => "the path has an encoded NUL (%00)",
            PathProblem::Backslash => "the path has a backslash",
            PathProblem::BadPercentEscape => "the path has a malformed percent-escape",
        }
    }
}

/// The path part of a request target (everything before the first `?`).
pub fn path_of(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => &target[..i],
        None => target,
    }
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

fn check_segment(seg: &[u8]) -> Result<(), PathProblem> {
    let mut decoded_len = 0usize;
    let mut dots = 0usize;
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
                match hi << 4 | lo {
                    b'/' | b'\\' => return Err(PathProblem::EncodedSeparator),
                    0 => return Err(PathProblem::EncodedNul),
                    other => other,
                }
            }
            other => other,
        };
        if b == b'.' {
            dots += 1;
        }
        decoded_len += 1;
        i += 1;
    }
    if dots == decoded_len && (decoded_len == 1 || decoded_len == 2) {
        return Err(PathProblem::DotSegment);
    }
    Ok(())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one segment (borrowing when there is nothing to decode). Call only on
/// segments that passed [`check`], whose escapes are well formed.
pub fn decode_segment(seg: &[u8]) -> Cow<'_, [u8]> {
    if !seg.contains(&b'%') {
        return Cow::Borrowed(seg);
    }
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'%' {
            if let (Some(hi), Some(lo)) =
                (seg.get(i + 1).and_then(|&c| hex(c)), seg.get(i + 2).and_then(|&c| hex(c)))
            {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(seg[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
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
        ];
        for (path, want) in cases {
            assert_eq!(check(path.as_bytes()), Err(want), "{path}");
        }
    }

    #[test]
    fn query_is_not_part_of_the_path() {
        assert_eq!(path_of(b"/a/b?x=../..//"), b"/a/b");
        assert_eq!(check(path_of(b"/a?x=%2F")), Ok(()));
    }

    #[test]
    fn decoding() {
        assert_eq!(&*decode_segment(b"abc"), b"abc");
        assert_eq!(&*decode_segment(b"a%20b%2D"), b"a b-");
        assert!(matches!(decode_segment(b"plain"), Cow::Borrowed(_)));
    }
}
