//! The query string as the upstream's framework reads it (`application/x-www-form-urlencoded`,
//! WHATWG URL rules): pairs split on `&`, name and value on the first `=`, `+` is a space,
//! `%XX` is a byte, a malformed escape stays as written.

use std::borrow::Cow;

/// The decoded `(name, value)` pairs of a query (the text after `?`), in order; empty pairs
/// (`a=1&&b=2`) are skipped, a pair without `=` has an empty value.
pub(crate) fn pairs(query: &[u8]) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        (decode(name), decode(value))
    })
}

/// Form-decodes one component (borrowing when there is nothing to decode).
pub(crate) fn decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') && !s.contains(&b'+') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (s.get(i + 1).and_then(|&c| hex(c)), s.get(i + 2).and_then(|&c| hex(c))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(q: &str) -> Vec<(String, String)> {
        pairs(q.as_bytes())
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    fn p(n: &str, v: &str) -> (String, String) {
        (n.to_string(), v.to_string())
    }

    #[test]
    fn form_decoding() {
        assert_eq!(all("limit=10&offset=0"), vec![p("limit", "10"), p("offset", "0")]);
        assert_eq!(all("q=a+b%20c&x"), vec![p("q", "a b c"), p("x", "")]);
        assert_eq!(all("a=1&&b=%3D%26&"), vec![p("a", "1"), p("b", "=&")]);
        assert_eq!(all("a=b=c"), vec![p("a", "b=c")]);
        assert_eq!(all("%6Cimit=5"), vec![p("limit", "5")]);
        assert_eq!(all("a=%zz%4"), vec![p("a", "%zz%4")]);
        assert_eq!(all("a=%2B+"), vec![p("a", "+ ")]);
        assert_eq!(all(""), vec![]);
    }

    proptest! {
        #[test]
        fn decode_agrees_with_percent_encoding(s in "[a-zA-Z0-9 %+=&~.-]{0,40}") {
            let ours = decode(s.as_bytes()).into_owned();
            let spaced = s.replace('+', " ");
            let theirs: Vec<u8> = percent_encoding::percent_decode(spaced.as_bytes()).collect();
            prop_assert_eq!(ours, theirs);
        }
    }
}
