//! The source files of `src/` as the house checks read them: code with comments and
//! literals blanked, cut into tokens with their lines.

use std::path::Path;

/// One source file: its path below `src/` (`config/load.rs`) and its text.
pub(super) struct Source {
    /// Below `src/`, with `/` separators.
    pub(super) path: String,
    pub(super) text: String,
}

/// Every `.rs` file below `dir`, with paths relative to `dir`, in a stable order.
pub(super) fn read_sources(dir: &Path) -> Vec<Source> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Source>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(Source {
                    path: rel.to_string_lossy().replace('\\', "/"),
                    text: std::fs::read_to_string(&path).unwrap_or_default(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The text with comments, string literals and character literals replaced by spaces
/// (line breaks kept), so what is left is code: its braces and paths.
pub(super) fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, part: &[u8]| out.extend(part.iter().map(|&c| if c == b'\n' { c } else { b' ' }));
    let mut i = 0;
    while i < b.len() {
        let end = literal_end(b, i);
        if end > i {
            blank(&mut out, &b[i..end]);
            i = end;
        } else {
            out.push(if b[i].is_ascii() { b[i] } else { b' ' });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Where the comment or literal starting at `i` ends; `i` when none starts there.
fn literal_end(b: &[u8], i: usize) -> usize {
    let at = |k: usize| b.get(k).copied().unwrap_or(0);
    let find = |from: usize, pat: &[u8]| {
        (from..b.len())
            .find(|&k| b[k..].starts_with(pat))
            .map_or(b.len(), |k| k + pat.len())
    };
    match at(i) {
        b'/' if at(i + 1) == b'/' => (i..b.len()).find(|&k| b[k] == b'\n').unwrap_or(b.len()),
        b'/' if at(i + 1) == b'*' => block_comment_end(b, i),
        b'"' => {
            let mut k = i + 1;
            while k < b.len() && b[k] != b'"' {
                k += if b[k] == b'\\' { 2 } else { 1 };
            }
            (k + 1).min(b.len())
        }
        b'r' | b'b' | b'c' if i == 0 || !ident_byte(b[i - 1]) => {
            let mut k = i + 1;
            if at(i) != b'r' && at(k) == b'r' {
                k += 1;
            } else if at(i) != b'r' {
                return i;
            }
            let hashes = (k..b.len()).take_while(|&h| b[h] == b'#').count();
            if at(k + hashes) != b'"' {
                return i;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            find(k + hashes + 1, &close)
        }
        b'\'' if at(i + 1) == b'\\' => find(i + 3, b"'"),
        b'\'' => {
            // a character literal closes after one character; a lifetime or label does not
            let len = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
                .or_else(|e| std::str::from_utf8(&b[i + 1..i + 1 + e.valid_up_to()]))
                .ok()
                .and_then(|s| s.chars().next())
                .map_or(1, char::len_utf8);
            if at(i + 1 + len) == b'\'' {
                i + len + 2
            } else {
                i
            }
        }
        _ => i,
    }
}

fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut k = start;
    while k + 1 < b.len() {
        if b[k] == b'/' && b[k + 1] == b'*' {
            depth += 1;
            k += 2;
        } else if b[k] == b'*' && b[k + 1] == b'/' {
            depth -= 1;
            k += 2;
            if depth == 0 {
                return k;
            }
        } else {
            k += 1;
        }
    }
    b.len()
}

/// A token of code-only text and its 1-based line.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token<'a> {
    pub(super) text: &'a str,
    pub(super) line: usize,
}

/// Identifiers (and numbers), `::`, and single punctuation characters.
pub(super) fn tokens(code: &str) -> Vec<Token<'_>> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        let len = if c == b'\n' {
            line += 1;
            i += 1;
            continue;
        } else if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if ident_byte(c) {
            (i..b.len()).take_while(|&k| ident_byte(b[k])).count()
        } else if b[i..].starts_with(b"::") {
            2
        } else {
            1
        };
        out.push(Token {
            text: &code[i..i + len],
            line,
        });
        i += len;
    }
    out
}

pub(super) fn is_ident(t: &str) -> bool {
    t.bytes().next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
}
