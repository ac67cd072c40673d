//! Request framing (docs/reference.md#reading-requests): the parts of an HTTP/1.1 head that
//! decide which request the upstream will see, checked before any step of the pipeline.
//!
//! - `Host`: RFC 9112 §3.2 says a server must answer 400 to an HTTP/1.1 request without
//!   one, or with more than one. Forwarded without one, the upstream picks a virtual host of
//!   its own choosing.
//! - `Content-Length`: RFC 9110 §8.6 lets a recipient read a list of one repeated value
//!   (`12, 12`, or two lines of `12`) as that value; any other list is an unrecoverable
//!   framing error. The reconciled value is what the body limit is checked against, and the
//!   one value the upstream receives.

use http::header::{CONTENT_LENGTH, HOST};
use http::HeaderMap;

use super::denial::Denial;

/// What the head says about the body's length, once reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredLength {
    /// No `Content-Length` header.
    Absent,
    /// One value, or a list of one repeated value.
    Bytes(u64),
}

impl DeclaredLength {
    /// The length, when one was declared.
    pub fn bytes(self) -> Option<u64> {
        match self {
            DeclaredLength::Absent => None,
            DeclaredLength::Bytes(n) => Some(n),
        }
    }
}

/// Reconciles every `Content-Length` line and list element into one value; a list of
/// different values, or an element that is not a decimal number, is `bad_request`.
pub fn declared_length(headers: &HeaderMap) -> Result<DeclaredLength, Denial> {
    let mut found: Option<u64> = None;
    for line in headers.get_all(CONTENT_LENGTH) {
        for element in line.as_bytes().split(|&b| b == b',') {
            let n = decimal(trim_ows(element)).ok_or(Denial::BadRequest)?;
            match found {
                Some(prev) if prev != n => return Err(Denial::BadRequest),
                _ => found = Some(n),
            }
        }
    }
    Ok(found.map_or(DeclaredLength::Absent, DeclaredLength::Bytes))
}

/// RFC 9112 §3.2 on an HTTP/1.1 request: exactly one `Host` line. HTTP/1.0 may omit it;
/// HTTP/2 carries `:authority` instead and is not checked here.
pub fn check_host(http11: bool, headers: &HeaderMap) -> Result<(), Denial> {
    if !http11 {
        return Ok(());
    }
    let mut lines = headers.get_all(HOST).iter();
    match (lines.next(), lines.next()) {
        (Some(_), None) => Ok(()),
        _ => Err(Denial::BadRequest),
    }
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// `1*DIGIT` (RFC 9110 §8.6), no sign, no spaces inside; `None` when it overflows.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter()
        .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: http::header::HeaderName, values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    /// Header lines, and what they reconcile to.
    type Case<'a> = (&'a [&'a [u8]], Result<DeclaredLength, Denial>);

    #[test]
    fn content_length_lists_of_one_value_are_that_value() {
        let cases: &[Case<'_>] = &[
            (&[], Ok(DeclaredLength::Absent)),
            (&[b"12"], Ok(DeclaredLength::Bytes(12))),
            (&[b"12, 12"], Ok(DeclaredLength::Bytes(12))),
            (&[b"12,12 ,\t12"], Ok(DeclaredLength::Bytes(12))),
            (&[b"12", b"12"], Ok(DeclaredLength::Bytes(12))),
            (&[b"0"], Ok(DeclaredLength::Bytes(0))),
            (&[b"12, 13"], Err(Denial::BadRequest)),
            (&[b"12", b"13"], Err(Denial::BadRequest)),
            (&[b"12,"], Err(Denial::BadRequest)),
            (&[b"+12"], Err(Denial::BadRequest)),
            (&[b"-1"], Err(Denial::BadRequest)),
            (&[b"1 2"], Err(Denial::BadRequest)),
            (&[b"0x10"], Err(Denial::BadRequest)),
            (&[b"99999999999999999999999"], Err(Denial::BadRequest)),
        ];
        for (values, want) in cases {
            let got = declared_length(&headers(CONTENT_LENGTH, values));
            assert_eq!(&got, want, "{values:?}");
        }
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(check_host(true, &headers(HOST, &[b"api.example"])), Ok(()));
        assert_eq!(check_host(true, &headers(HOST, &[])), Err(Denial::BadRequest));
        assert_eq!(check_host(true, &headers(HOST, &[b"a", b"b"])), Err(Denial::BadRequest));
        // HTTP/1.0 may omit it
        assert_eq!(check_host(false, &headers(HOST, &[])), Ok(()));
    }
}
