//! The import rule: which top-level module may import which ([`LAYERS`]), and no import
//! circle at any level. Each path a file names is lifted to an edge between two sibling
//! modules: `config/load.rs` naming `crate::tls::X` is the edge `config -> tls` at the top,
//! `config/jwks.rs` naming `super::load::X` is `jwks -> load` inside `config`.

use std::collections::{BTreeMap, BTreeSet};

use super::source::{code_only, is_ident, tokens, Source, Token};

/// Which top-level module may import which, bottom up (docs/architecture.md, first picture).
/// A module missing here fails the test: place it before using it. `main` (the binary) may
/// import anything; nothing may import it.
pub(super) const LAYERS: &[(&str, &[&str])] = &[
    // leaves: text helpers and the append-only file, importing nothing of ours
    ("json_text", &[]),
    ("ip_text", &[]),
    ("path_text", &[]),
    ("state_file", &[]),
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

/// One import between sibling modules: inside `parent`, `from` names `to` at `at` (file:line).
#[derive(Debug, Clone)]
pub(super) struct Edge {
    /// The module both ends are children of (empty: the crate root).
    pub(super) parent: Vec<String>,
    pub(super) from: String,
    pub(super) to: String,
    /// `src/<file>:<line>` of the path that makes the edge.
    pub(super) at: String,
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
pub(super) fn named_paths(code: &str) -> Vec<(Vec<String>, usize)> {
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
pub(super) fn edges(sources: &[Source]) -> Vec<Edge> {
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
pub(super) fn violations(sources: &[Source], layers: &[(&str, &[&str])]) -> Vec<String> {
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
        found.push(format!(
            "module `{top}` is not placed in LAYERS (tests/e2e/house/imports.rs)"
        ));
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
