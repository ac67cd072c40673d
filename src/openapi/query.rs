//! The query string as the upstream's framework reads it (`application/x-www-form-urlencoded`,
//! WHATWG URL rules): pairs split on `&`, name and value on the first `=`, `+` is a space,
//! `%XX` is a byte, a malformed escape stays as written. Form bodies are read the same way.
//!
//! A name with a bracket suffix (`limit[]`, `limit[0]`, `filter[age]`, raw or percent-encoded)
//! is the parameter before the brackets, as qs (Express 4), PHP and Rails read it: an
//! [`Occurrence`] keeps the bracket segments so each parameter's style can say what they mean.

use std::borrow::Cow;

/// One occurrence of a name in a query or form body: its bracket segments and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Occurrence<'q> {
    /// The decoded segments between brackets after the name: `[]` for `tag`, `[""]` for
    /// `tag[]`, `["0"]` for `tag[0]`, `["a", "b"]` for `f[a][b]`.
    pub(crate) path: Vec<Vec<u8>>,
    /// The suffix is not only bracket segments (`tag[`, `tag[a]x`): readers disagree on it.
    pub(crate) malformed: bool,
    pub(crate) value: Cow<'q, [u8]>,
}

/// The bracket segments of a decoded name after `name`, or `None` when the name is another.
fn suffix_of(decoded: &[u8], name: &[u8]) -> Option<(Vec<Vec<u8>>, bool)> {
    let rest = decoded.strip_prefix(name)?;
    if rest.is_empty() {
        return Some((Vec::new(), false));
    }
    if rest[0] != b'[' {
        return None;
    }
    let mut path = Vec::new();
    let mut tail = rest;
    while let Some(inner) = tail.strip_prefix(b"[") {
        let Some(end) = inner.iter().position(|&b| b == b']') else {
            return Some((path, true));
        };
        path.push(inner[..end].to_vec());
        tail = &inner[end + 1..];
    }
    Some((path, !tail.is_empty()))
}

/// Every name of a query or form body (the part before its first `[`), each with its
/// occurrences, in the order the names first appear.
pub(crate) fn grouped(query: &[u8]) -> Vec<(Vec<u8>, Vec<Occurrence<'_>>)> {
    let mut out: Vec<(Vec<u8>, Vec<Occurrence<'_>>)> = Vec::new();
    for (name, value) in pairs(query) {
        let base_len = name.iter().position(|&b| b == b'[').unwrap_or(name.len());
        let base = &name[..base_len];
        let Some((path, malformed)) = suffix_of(&name, base) else {
            continue;
        };
        let occurrence = Occurrence { path, malformed, value };
        match out.iter_mut().find(|(n, _)| n == base) {
            Some((_, list)) => list.push(occurrence),
            None => out.push((base.to_vec(), vec![occurrence])),
        }
    }
    out
}

/// Every occurrence of `name` (plain or with a bracket suffix), decoded, in order.
pub(crate) fn occurrences<'q>(query: &'q [u8], name: &str) -> Vec<Occurrence<'q>> {
    pairs(query)
        .filter_map(|(n, value)| {
            let (path, malformed) = suffix_of(&n, name.as_bytes())?;
            Some(Occurrence { path, malformed, value })
        })
        .collect()
}

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

    fn occ(q: &str, name: &str) -> Vec<(Vec<String>, bool, String)> {
        occurrences(q.as_bytes(), name)
            .into_iter()
            .map(|o| {
                let path = o.path.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
                (path, o.malformed, String::from_utf8_lossy(&o.value).into_owned())
            })
            .collect()
    }

    fn o(path: &[&str], malformed: bool, value: &str) -> (Vec<String>, bool, String) {
        (
            path.iter().map(|s| s.to_string()).collect(),
            malformed,
            value.to_string(),
        )
    }

    #[test]
    fn bracket_suffixes_name_the_same_parameter() {
        let table = [
            ("limit=5", vec![o(&[], false, "5")]),
            ("limit[]=500", vec![o(&[""], false, "500")]),
            ("limit%5B%5D=500", vec![o(&[""], false, "500")]),
            (
                "limit%5b0%5d=1&limit[x]=2",
                vec![o(&["0"], false, "1"), o(&["x"], false, "2")],
            ),
            ("f[a][b]=1", vec![]),
            (
                "limit[=1&limit[a]x=2&limit]=3",
                vec![o(&[], true, "1"), o(&["a"], true, "2")],
            ),
            ("limits=1&limit_=2&Limit=3&xlimit=4", vec![]),
            ("limit", vec![o(&[], false, "")]),
        ];
        for (q, want) in table {
            assert_eq!(occ(q, "limit"), want, "{q}");
        }
        assert_eq!(
            occ("f[a][b]=1&f=2", "f"),
            vec![o(&["a", "b"], false, "1"), o(&[], false, "2")]
        );
    }

    #[test]
    fn names_are_grouped_before_their_brackets() {
        let g = grouped(b"a=1&b[]=2&a[x]=3&%5Bodd=4");
        let names: Vec<(String, usize)> = g
            .iter()
            .map(|(n, o)| (String::from_utf8_lossy(n).into_owned(), o.len()))
            .collect();
        assert_eq!(names, vec![("a".into(), 2), ("b".into(), 1), ("".into(), 1)]);
        assert_eq!(g[0].1[1].path, vec![b"x".to_vec()]);
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
