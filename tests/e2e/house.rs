//! The house rules, checked on `src/` (docs/architecture.md): imports run one way and close no
//! circle ([`imports`]), no function is longer than 80 lines ([`lengths`]). They read the
//! sources as text (comments, strings and character literals blanked by [`source`]), so they
//! are repository rules, kept here beside the other checks of the repository rather than in
//! the product crate.

mod imports;
mod lengths;
mod reason_probe;
mod source;

use crate::common::repo_path;
use imports::{named_paths, violations, LAYERS};
use lengths::{function_lengths, MAX_FUNCTION_LINES};
use source::{code_only, read_sources, Source};

fn src() -> Vec<Source> {
    read_sources(&repo_path("src"))
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

/// Fault model: a module imports one above it (`config` naming the `gateway`, a store naming
/// the `proxy`), two modules import each other, or a new top-level module is placed nowhere;
/// rustc accepts all three. Must hold: imports in `src/` (tests included) follow
/// [`LAYERS`](imports::LAYERS) and close no circle at any level.
#[test]
fn imports_run_one_way() {
    let sources = src();
    assert!(sources.len() > 50, "src/ not found: {}", sources.len());
    let found = violations(&sources, LAYERS);
    assert!(found.is_empty(), "the import rule is broken:\n  {}", found.join("\n  "));
}

/// Fault model: a function in `src/` (a unit test included) grows past 80 lines instead of
/// being split into named steps. Must hold: none is longer than
/// [`MAX_FUNCTION_LINES`](lengths::MAX_FUNCTION_LINES).
#[test]
fn no_function_is_longer_than_80_lines() {
    let long: Vec<String> = function_lengths(&src())
        .into_iter()
        .filter(|(_, n)| *n > MAX_FUNCTION_LINES)
        .map(|(f, n)| format!("{f}: {n} lines"))
        .collect();
    assert!(long.is_empty(), "split these into steps:\n  {}", long.join("\n  "));
}

/// Fault model: the import checker stops seeing what it guards (a parser change that finds
/// no edges would pass every tree). Must hold: an upward import, a circle between siblings
/// at the top and inside a module, a module the table does not place, and a circle in the
/// table itself are all reported, with `src/<file>:<line>`.
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

/// Fault model: braces or paths inside comments, strings, raw strings and character
/// literals are read as code, so the length check miscounts or the import check invents
/// edges; a lifetime is read as a character literal. Must hold: only code counts, and a
/// function of 82 lines is measured as 82.
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

/// Fault model: a variant is added to `Reason` (src/policy/denial.rs) and to no list beside
/// it. `Reason::ALL` used to be such a list, kept by hand: it compiled with the variant
/// missing, and the metrics (one child per entry, indexed by the variant's position) panicked
/// on its first refusal. Must hold: the real declaration, compiled with a synthetic variant
/// added, does not compile until the variant has a name (the exhaustive `match` of
/// `as_str`), and once it has one, `ALL` holds it at its index and is one longer.
#[test]
fn a_new_reason_cannot_be_missing_from_reason_all() {
    let decl = reason_probe::declaration();
    assert!(
        decl.variants > 20,
        "the probe lost the enum: {} variants",
        decl.variants
    );

    let unnamed = reason_probe::compile_and_run("reason-unnamed", &reason_probe::probe_source(&decl, false));
    assert!(!unnamed.compiled, "a reason without a name compiled");
    let not_covered = format!("`Reason::{}` not covered", reason_probe::SYNTHETIC);
    assert!(
        unnamed.rustc_stderr.contains("E0004") && unnamed.rustc_stderr.contains(&not_covered),
        "rustc refused it, but not for the missing name:\n{}",
        unnamed.rustc_stderr
    );

    let named = reason_probe::compile_and_run("reason-named", &reason_probe::probe_source(&decl, true));
    assert!(named.compiled, "the probe did not compile:\n{}", named.rustc_stderr);
    assert_eq!(
        named.printed,
        (decl.variants + 1).to_string(),
        "Reason::ALL did not grow with the enum"
    );
}
