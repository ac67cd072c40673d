//! Method differentials (docs/reference.md#pipeline, step 0): requests the gateway would route
//! under one method while the upstream's framework runs another.
//!
//! Two shapes are refused with 400 `bad_method`:
//! - a method with a lowercase letter (`post`): the gateway matches methods exactly (RFC 9110),
//!   so `post` skips a `method = "POST"` route and its limits, while Django, Flask and Express
//!   upper-case it and run the POST handler (nginx refuses it the same way);
//! - a query parameter named `_method`: Laravel and Rails run the method it names instead of the
//!   one the gateway checked.

/// Why a request's method was refused (the log line and the message say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodProblem {
    /// The method token has a lowercase ASCII letter.
    Lowercase,
    /// The query has a `_method` parameter (any case, percent-decoded).
    OverrideParameter,
}

impl MethodProblem {
    /// Words for logs and the error message.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            MethodProblem::Lowercase => {
                "the method has a lowercase letter (methods are case-sensitive: send POST, not post)"
            }
            MethodProblem::OverrideParameter => {
                "the _method query parameter is not accepted (method overrides are refused)"
            }
        }
    }
}

/// Refuses a method with a lowercase letter. Methods are tokens, so ASCII is all there is.
pub fn check_method(method: &str) -> Result<(), MethodProblem> {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(MethodProblem::Lowercase);
    }
    Ok(())
}

/// Refuses a request target whose query has a parameter that a framework reads as `_method`.
/// Parameters are split on `&` and `;` (older Rack splits on both); see [`is_override_name`].
pub fn check_query(target: &[u8]) -> Result<(), MethodProblem> {
    match super::path::query_of(target) {
        Some(query) => check_query_string(query),
        None => Ok(()),
    }
}

/// [`check_query`] on the query string itself (the target after its first `?`).
pub fn check_query_string(query: &[u8]) -> Result<(), MethodProblem> {
    for param in query.split(|&b| b == b'&' || b == b';') {
        let name = param.split(|&b| b == b'=').next().unwrap_or_default();
        if is_override_name(name) {
            return Err(MethodProblem::OverrideParameter);
        }
    }
    Ok(())
}

/// Whether a raw parameter name means `_method` to some framework: percent-decoded with `+`
/// as a space (form encoding), compared ASCII case-insensitively. PHP (Laravel reads `$_GET`
/// through Symfony) also drops leading spaces, reads ` `, `.` and a first `[` as `_`, and
/// makes `_method[x]` the array `_method`: those spellings count too.
fn is_override_name(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"_method";
    // a cheap filter first: every spelling ends in "method", percent-encoded or not
    if raw.len() < NAME.len() - 1 {
        return false;
    }
    let decoded = form_decode(raw);
    let mut name: &[u8] = &decoded;
    while let Some(rest) = name.strip_prefix(b" ") {
        name = rest;
    }
    // PHP's array syntax: the name ends at the first '[' that a ']' closes
    if let Some(open) = name.iter().position(|&b| b == b'[') {
        if open > 0 && name[open..].contains(&b']') {
            name = &name[..open];
        }
    }
    if name.len() != NAME.len() {
        return false;
    }
    let php = |b: u8| if matches!(b, b' ' | b'.' | b'[') { b'_' } else { b };
    name.iter().zip(NAME).all(|(&a, &b)| php(a).eq_ignore_ascii_case(&b))
}

/// `application/x-www-form-urlencoded` decoding of one name: `+` is a space, well-formed
/// escapes are decoded, anything else is kept.
fn form_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                );
                if let (Some(h), Some(l)) = pair {
                    out.push((h << 4) | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_with_a_lowercase_letter_are_refused() {
        for ok in ["GET", "POST", "DELETE", "PROPFIND", "M-SEARCH", "X1"] {
            assert_eq!(check_method(ok), Ok(()), "{ok}");
        }
        for bad in ["post", "Post", "gET", "delete", "x"] {
            assert_eq!(check_method(bad), Err(MethodProblem::Lowercase), "{bad}");
        }
    }

    #[test]
    fn the_method_override_parameter_is_refused_in_every_spelling() {
        for bad in [
            "/a?_method=DELETE",
            "/a?x=1&_method=PUT",
            "/a?x=1;_method=PUT",
            "/a?_METHOD=put",
            "/a?_Method",
            "/a?%5Fmethod=DELETE",
            "/a?_%6Dethod=DELETE",
            "/a?%5f%4D%45%54%48%4F%44=x",
            "/a?.method=DELETE",
            "/a?+_method=DELETE",
            "/a?%20%20_method=DELETE",
            "/a?[method=DELETE",
            "/a?_method[]=DELETE",
            "/a?_method[x]=DELETE",
            "/a?x=1&&_method",
        ] {
            assert_eq!(
                check_query(bad.as_bytes()),
                Err(MethodProblem::OverrideParameter),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_queries_pass() {
        for ok in [
            "/a",
            "/a?",
            "/a?method=DELETE",
            "/a?x=_method",
            "/a?__method=1",
            "/a?_methods=1",
            "/a?_method_=1",
            "/a?x_method=1",
            "/a?_meth%6Fd2=1",
            "/a?_method[=1",
            "/a?%20method=1",
            "/a?%=1&%zz",
            "/_method?x=1",
        ] {
            assert_eq!(check_query(ok.as_bytes()), Ok(()), "{ok}");
        }
    }
}
