//! The house rules as tests (docs/architecture.md): imports run one way, no module circle,
//! no function over [`MAX_FUNCTION_LINES`] lines.
//!
//! The checker reads every `src/**/*.rs` as text (comments, strings and character literals
//! blanked first), collects the module paths each file names (`use` trees and `crate::`,
//! `super::`, `self::` paths, tests included), and lifts each to an edge between two sibling
//! modules: `config/load.rs` naming `crate::tls::X` is the edge `config -> tls` at the top,
//! `config/jwks.rs` naming `super::load::X` is `jwks -> load` inside `config`. Top-level edges
//! must be in [`LAYERS`]; at every level the edges must not close a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which top-level module may import which, bottom up (docs/architecture.md, first picture).
/// A module missing here fails the test: place it before using it. `main` (the binary) may
/// import anything; nothing may import it.
pub(crate) const LAYERS: &[(&str, &[&str])] = &[
    // leaves: text helpers and the append-only file, importing nothing of ours
    ("json_text", &[]),
    ("ip_text", &[]),
    ("path_text", &[]),
    ("state_file", &[]),
    ("architecture", &[]),
    // pure decisions: no pingora, no I/O (the spec compiler first: step 7a is a policy layer)
    ("openapi", &["path_text"]),
    ("policy", &["ip_text", "json_text", "openapi", "path_text"]),
    // files into validated values
    ("config", &["openapi", "policy"]),
    // what the running gateway owns: stores, metrics, the TLS listener, the log writer
    ("metrics", &["openapi", "policy"]),
    ("journal", &["policy", "state_file"]),
    ("shared", &["config", "metrics", "policy", "state_file"]),
    ("tls", &["config", "metrics"]),
    ("logging", &["config"]),
    ("access_log", &["ip_text", "json_text", "logging"]),
    (
        "gateway",
        &["config", "journal", "metrics", "openapi", "policy", "shared", "tls"],
    ),
    // the pingora service, and what runs beside it
    (
        "proxy",
        &["access_log", "config", "gateway", "metrics", "openapi", "policy", "tls"],
    ),
    ("admin", &["gateway", "metrics"]),
    ("jwks_fetch", &["config", "gateway"]),
    (
        "server",
        &["admin", "config", "gateway", "jwks_fetch", "logging", "proxy"],
    ),
    // commands
    ("mint", &["config", "policy"]),
    (
        "ops",
        &["config", "journal", "metrics", "policy", "shared", "state_file"],
    ),
    ("demo", &["config", "logging", "mint", "server"]),
    ("main", &["*"]),
];

/// The longest function allowed, tests included, counted from its `fn` line to its closing
/// brace.
pub(crate) const MAX_FUNCTION_LINES: usize = 80;

/// One source file: its path below `src/` (`config/load.rs`) and its text.
pub(crate) struct Source {
    /// Below `src/`, with `/` separators.
    pub(crate) path: String,
    pub(crate) text: String,
}

/// One import between sibling modules: inside `parent`, `from` names `to` at `at` (file:line).
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    /// The module both ends are children of (empty: the crate root).
    pub(crate) parent: Vec<String>,
    pub(crate) from: String,
    pub(crate) to: String,
    /// `src/<file>:<line>` of the path that makes the edge.
    pub(crate) at: String,
}

/// Every `.rs` file below `dir`, with paths relative to `dir`, in a stable order.
pub(crate) fn read_sources(dir: &Path) -> Vec<Source> {
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
pub(crate) fn code_only(src: &str) -> String {
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

fn ident_byte(c: u8) -> bool {
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
struct Token<'a> {
    text: &'a str,
    line: usize,
}

/// Identifiers (and numbers), `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<Token<'_>> {
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

fn is_ident(t: &str) -> bool {
    t.bytes().next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
}

/// Expands one `use` tree starting at `i` (after `use` or a `{`/`,`), appending each path
/// it names; returns the index after it.
fn use_tree(
    t: &[Token<'_>],
    mut i: usize,
    mut prefix: Vec<String>,
    line: usize,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    while let Some(tok) = t.get(i) {
        match tok.text {
            "::" => i += 1,
            "{" => {
                i += 1;
                while t.get(i).is_some_and(|x| x.text != "}") {
                    i = use_tree(t, i, prefix.clone(), line, out);
                    if t.get(i).is_some_and(|x| x.text == ",") {
                        i += 1;
                    } else if t.get(i).is_none_or(|x| x.text != "}") {
                        break;
                    }
                }
                return i + 1;
            }
            "*" => break,
            name if is_ident(name) => {
                prefix.push(name.to_string());
                i += 1;
                if t.get(i).is_some_and(|x| x.text == "::") {
                    continue;
                }
                if t.get(i).is_some_and(|x| x.text == "as") {
                    i += 2;
                }
                out.push((prefix, line));
                return i;
            }
            _ => break,
        }
    }
    out.push((prefix, line));
    i + 1
}

/// Every module path the code names: `use` trees expanded, and `crate::`, `super::`,
/// `self::` (and, in the binary, `authgate::`) paths anywhere else.
fn named_paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let t = tokens(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let tok = &t[i];
        let next_is_path = t.get(i + 1).is_some_and(|x| x.text == "::");
        if tok.text == "use" {
            i = use_tree(&t, i + 1, Vec::new(), tok.line, &mut out);
        } else if matches!(tok.text, "crate" | "super" | "self" | "authgate") && next_is_path {
            let mut path = vec![tok.text.to_string()];
            let mut k = i + 1;
            while t.get(k).is_some_and(|x| x.text == "::") && t.get(k + 1).is_some_and(|x| is_ident(x.text)) {
                path.push(t[k + 1].text.to_string());
                k += 2;
            }
            out.push((path, tok.line));
            i = k;
        } else {
            i += 1;
        }
    }
    out
}

/// The module a file is: `lib.rs` the root, `config/mod.rs` and `config.rs` `config`,
/// `config/load.rs` `config::load`; the binary's `main.rs` is the module `main`.
fn module_of(path: &str) -> Vec<String> {
    let stem = path.strip_suffix(".rs").unwrap_or(path);
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Every edge between sibling modules that the sources' paths make.
pub(crate) fn edges(sources: &[Source]) -> Vec<Edge> {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| module_of(&s.path)).collect();
    let mut out = Vec::new();
    for s in sources {
        let here = module_of(&s.path);
        for (path, line) in named_paths(&code_only(&s.text)) {
            let Some(target) = resolve(&here, &path, s.path == "main.rs", &modules) else {
                continue;
            };
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == here.len() || common == target.len() {
                continue; // a module naming its own ancestor or descendant
            }
            out.push(Edge {
                parent: here[..common].to_vec(),
                from: here[common].clone(),
                to: target[common].clone(),
                at: format!("src/{}:{line}", s.path),
            });
        }
    }
    out
}

/// The deepest known module a path names, from the module `here`; `None` for a path
/// outside the crate (another crate, a local item).
fn resolve(here: &[String], path: &[String], binary: bool, modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut base: Vec<String> = here.to_vec();
    let mut rest: Vec<String> = rest.to_vec();
    match first.as_str() {
        "crate" if binary => base = vec!["main".into()],
        "crate" | "authgate" => base.clear(),
        "self" => {}
        "super" => {
            base.pop();
            while rest.first().is_some_and(|p| p == "super") {
                rest.remove(0);
                base.pop();
            }
        }
        _ => {
            let mut child = here.to_vec();
            child.push(first.clone());
            if !modules.contains(&child) {
                return None;
            }
            rest.insert(0, first.clone());
        }
    }
    let mut target = base.clone();
    let mut probe = base;
    for part in rest.into_iter().filter(|p| p != "self") {
        probe.push(part);
        if modules.contains(&probe) {
            target = probe.clone();
        }
    }
    Some(target)
}

/// What breaks the rules: a top-level edge [`LAYERS`] does not allow, a top-level module
/// it does not place, a circle at any level (and a circle in the table itself).
pub(crate) fn violations(sources: &[Source], layers: &[(&str, &[&str])]) -> Vec<String> {
    let mut found = Vec::new();
    let allowed: BTreeMap<&str, &[&str]> = layers.iter().copied().collect();
    let table: Vec<(String, String)> = layers
        .iter()
        .flat_map(|(m, to)| to.iter().filter(|t| **t != "*").map(|t| (m.to_string(), t.to_string())))
        .collect();
    found.extend(circles(&table).into_iter().map(|c| format!("LAYERS has a circle: {c}")));
    let tops: BTreeSet<String> = sources
        .iter()
        .filter_map(|s| module_of(&s.path).first().cloned())
        .collect();
    for top in tops.iter().filter(|t| !allowed.contains_key(t.as_str())) {
        found.push(format!("module `{top}` is not placed in architecture::LAYERS"));
    }
    let all = edges(sources);
    for e in all.iter().filter(|e| e.parent.is_empty()) {
        let ok = allowed
            .get(e.from.as_str())
            .is_some_and(|to| to.contains(&"*") || to.contains(&e.to.as_str()));
        if !ok && allowed.contains_key(e.from.as_str()) {
            found.push(format!(
                "{}: `{}` imports `{}`, which LAYERS does not allow",
                e.at, e.from, e.to
            ));
        }
    }
    let mut levels: BTreeMap<&[String], Vec<(String, String)>> = BTreeMap::new();
    for e in &all {
        levels
            .entry(e.parent.as_slice())
            .or_default()
            .push((e.from.clone(), e.to.clone()));
    }
    for (parent, level) in levels {
        for c in circles(&level) {
            let inside = if parent.is_empty() {
                "crate".into()
            } else {
                parent.join("::")
            };
            let at: Vec<&str> = all
                .iter()
                .filter(|e| e.parent.as_slice() == parent && c.contains(&format!("{} -> {}", e.from, e.to)))
                .map(|e| e.at.as_str())
                .collect();
            found.push(format!("import circle in {inside}: {c} (at {})", at.join(", ")));
        }
    }
    found
}

/// Each circle of a directed graph, as `a -> b -> a`.
fn circles(edges: &[(String, String)]) -> Vec<String> {
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a.as_str()).or_default().insert(b.as_str());
    }
    // 0 unseen, 1 on the path, 2 done
    fn visit<'a>(
        n: &'a str,
        next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<String>,
    ) {
        state.insert(n, 1);
        path.push(n);
        for &m in next.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                0 => visit(m, next, state, path, out),
                1 => {
                    let from = path.iter().position(|p| *p == m).unwrap_or(0);
                    let mut c: Vec<&str> = path[from..].to_vec();
                    c.push(m);
                    out.push(c.join(" -> "));
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n, 2);
    }
    let mut state = BTreeMap::new();
    let mut out = Vec::new();
    for &n in next.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            visit(n, &next, &mut state, &mut Vec::new(), &mut out);
        }
    }
    out
}

/// Every function (tests and nested functions included) with its length in lines, from its
/// `fn` line to its closing brace: (`src/file:line name`, lines).
pub(crate) fn function_lengths(sources: &[Source]) -> Vec<(String, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Vec<Source> {
        read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
    }

    fn sources(files: &[(&str, &str)]) -> Vec<Source> {
        files
            .iter()
            .map(|(path, text)| Source {
                path: path.to_string(),
                text: text.to_string(),
            })
            .collect()
    }

    /// The guard: imports in `src/` follow [`LAYERS`] and close no circle at any level.
    #[test]
    fn imports_run_one_way() {
        let sources = src();
        assert!(sources.len() > 50, "src/ not found: {}", sources.len());
        let found = violations(&sources, LAYERS);
        assert!(found.is_empty(), "the import rule is broken:\n  {}", found.join("\n  "));
    }

    /// The guard: no function in `src/`, tests included, is longer than 80 lines.
    #[test]
    fn no_function_is_longer_than_80_lines() {
        let long: Vec<String> = function_lengths(&src())
            .into_iter()
            .filter(|(_, n)| *n > MAX_FUNCTION_LINES)
            .map(|(f, n)| format!("{f}: {n} lines"))
            .collect();
        assert!(long.is_empty(), "split these into steps:\n  {}", long.join("\n  "));
    }

    /// The checker can fail: an upward import, a circle between siblings, and a module the
    /// table does not place are all reported.
    #[test]
    fn the_checker_flags_upward_imports_circles_and_unplaced_modules() {
        let bad = sources(&[
            ("lib.rs", "pub mod config; pub mod tls; pub mod policy; mod newcomer;"),
            ("config/mod.rs", "pub mod load;\npub mod jwks;\npub use load::load;"),
            (
                "config/load.rs",
                "use super::jwks;\nuse crate::tls::{TlsState, self};\n",
            ),
            ("config/jwks.rs", "use super::{problem::P, load::BURNED};"),
            ("tls.rs", "use crate::config::Problem;"),
            ("policy/mod.rs", "fn f() { let _ = crate::config::load::load(); }"),
            ("newcomer.rs", ""),
        ]);
        let found = violations(&bad, LAYERS).join("\n");
        assert!(
            found.contains("src/config/load.rs:2: `config` imports `tls`"),
            "{found}"
        );
        assert!(
            found.contains("src/policy/mod.rs:1: `policy` imports `config`"),
            "{found}"
        );
        assert!(
            found.contains("import circle in config: jwks -> load -> jwks"),
            "{found}"
        );
        assert!(
            found.contains("import circle in crate: config -> tls -> config"),
            "{found}"
        );
        assert!(found.contains("module `newcomer` is not placed"), "{found}");
        let circular: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["a"])];
        assert!(violations(&[], circular)[0].contains("LAYERS has a circle: a -> b -> a"));
    }

    /// Braces and paths in comments, strings and character literals are not code.
    #[test]
    fn literals_and_comments_are_not_code() {
        let text = "fn a() {\n    let s = \"}} crate::tls::X\";\n    let r = r#\"{\"#;\n    let c = '{';\n    // }\n    /* { /* } */ } */\n    let l: &'static str = \"\";\n}\nfn b(x: [u8; 2]) -> u8 { x[0] }\ntrait T { fn c(&self); }\n";
        let lengths = function_lengths(&sources(&[("x.rs", text)]));
        let lengths: Vec<(&str, usize)> = lengths.iter().map(|(f, n)| (f.as_str(), *n)).collect();
        assert_eq!(lengths, [("src/x.rs:1 a", 8), ("src/x.rs:9 b", 1)]);
        assert!(named_paths(&code_only(text)).is_empty());
        let long = format!("fn long() {{\n{}}}\n", "    let _ = 1;\n".repeat(MAX_FUNCTION_LINES));
        assert_eq!(
            function_lengths(&sources(&[("y.rs", &long)]))[0].1,
            MAX_FUNCTION_LINES + 2
        );
    }
}
