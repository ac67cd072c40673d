//! Percent-decoding of one path segment: the path checks (step 0), org ownership (step 8)
//! and the OpenAPI router all read a segment the way the upstream will. A leaf helper (it
//! imports nothing), so the spec compiler and the decision layers share it without one
//! importing the other.

use std::borrow::Cow;

/// The value of one hex digit of a `%XX` escape.
pub(crate) fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one segment (borrowing when there is nothing to decode). Call only on
/// segments that passed `policy::path::check`, whose escapes are well formed; a malformed
/// escape is kept as it is.
pub fn decode_segment(seg: &[u8]) -> Cow<'_, [u8]> {
    if !seg.contains(&b'%') {
        return Cow::Borrowed(seg);
    }
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                seg.get(i + 1).and_then(|&c| hex(c)),
                seg.get(i + 2).and_then(|&c| hex(c)),
            ) {
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
