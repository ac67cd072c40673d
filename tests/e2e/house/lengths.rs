//! The length rule: no function in `src/`, tests included, longer than
//! [`MAX_FUNCTION_LINES`].

use super::source::{code_only, is_ident, tokens, Source, Token};

/// The longest function allowed, tests included, counted from its `fn` line to its closing
/// brace.
pub(super) const MAX_FUNCTION_LINES: usize = 80;

/// Every function (tests and nested functions included) with its length in lines, from its
/// `fn` line to its closing brace: (`src/file:line name`, lines).
pub(super) fn function_lengths(sources: &[Source]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for s in sources {
        let code = code_only(&s.text);
        let t = tokens(&code);
        for (i, tok) in t.iter().enumerate() {
            let named = t.get(i + 1).filter(|n| is_ident(n.text));
            let (Some(name), "fn") = (named, tok.text) else {
                continue;
            };
            if let Some(end) = body_end(&t, i + 2) {
                out.push((format!("src/{}:{} {}", s.path, tok.line, name.text), end - tok.line + 1));
            }
        }
    }
    out
}

/// The line of the brace that closes the body starting after `from` (`None`: no body).
fn body_end(t: &[Token<'_>], from: usize) -> Option<usize> {
    let mut nesting = 0i32;
    let mut k = from;
    // the signature: up to the body's `{`, or a `;` (a declaration without body)
    loop {
        match t.get(k)?.text {
            "(" | "[" => nesting += 1,
            ")" | "]" => nesting -= 1,
            ";" if nesting == 0 => return None,
            "{" if nesting == 0 => break,
            _ => {}
        }
        k += 1;
    }
    let mut depth = 0;
    for tok in &t[k..] {
        match tok.text {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return Some(tok.line);
                }
            }
            _ => {}
        }
    }
    None
}
