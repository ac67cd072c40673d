//! A probe crate made of the real declaration of `Reason` (src/policy/denial.rs: the
//! `closed_enum!` macro, the enum and its `impl`), with a synthetic variant added, compiled by
//! rustc alone: what happens to a reason added to the enum and nowhere else.

use std::path::Path;
use std::process::Command;

use super::source::code_only;
use crate::common::{read_repo, TempDir};

/// The name of the variant the probe adds.
pub(super) const SYNTHETIC: &str = "Synthetic";

/// The part of denial.rs the probe compiles, and how many variants `Reason` has there.
pub(super) struct Declaration {
    pub(super) text: String,
    pub(super) variants: usize,
}

/// Cuts the declaration out of src/policy/denial.rs: from the doc comment of `closed_enum!`
/// to the brace that closes `impl Reason`. Panics naming what it could not find.
pub(super) fn declaration() -> Declaration {
    let file = read_repo("src/policy/denial.rs");
    let code = code_only(&file);
    let find = |needle: &str| {
        code.find(needle)
            .unwrap_or_else(|| panic!("src/policy/denial.rs has no `{needle}`"))
    };
    let macro_at = find("macro_rules! closed_enum");
    // back up over the doc comment lines above the macro
    let mut start = file[..macro_at].rfind('\n').map_or(0, |i| i + 1);
    while let Some(prev) = file[..start.saturating_sub(1)].rfind('\n') {
        if !file[prev + 1..start].trim_start().starts_with("///") {
            break;
        }
        start = prev + 1;
    }
    let impl_at = find("impl Reason {");
    let mut depth = 0usize;
    let end = code[impl_at..]
        .char_indices()
        .find_map(|(i, c)| {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(impl_at + i + 1);
                    }
                }
                _ => {}
            }
            None
        })
        .expect("impl Reason closes");
    let enum_at = find("enum Reason {");
    let enum_end = enum_at + code[enum_at..].find('}').expect("enum Reason closes");
    let variants = code[enum_at + "enum Reason {".len()..enum_end]
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .count();
    Declaration {
        text: file[start..end].to_string(),
        variants,
    }
}

/// The declaration with [`SYNTHETIC`] added as the enum's first variant and, with `named`,
/// an `as_str` arm for it; then a `main` that prints `ALL.len()` and checks the variant's
/// index is its position in `ALL`.
pub(super) fn probe_source(decl: &Declaration, named: bool) -> String {
    let mut text = decl
        .text
        .replacen("enum Reason {", &format!("enum Reason {{\n        {SYNTHETIC},"), 1);
    assert!(text.contains(SYNTHETIC), "the probe could not add its variant");
    if named {
        let arm = format!("match self {{\n            Reason::{SYNTHETIC} => \"synthetic\",");
        let at = text.find("fn as_str").expect("Reason::as_str");
        let (head, tail) = text.split_at(at);
        text = format!("{head}{}", tail.replacen("match self {", &arm, 1));
    }
    format!(
        "#![allow(dead_code)]\n{text}\n\nfn main() {{\n    let at = Reason::ALL.iter().position(|r| *r == Reason::{SYNTHETIC}).expect(\"ALL lacks the new variant\");\n    assert_eq!(Reason::{SYNTHETIC}.index(), at);\n    assert_eq!(Reason::{SYNTHETIC}.as_str(), \"synthetic\");\n    println!(\"{{}}\", Reason::ALL.len());\n}}\n"
    )
}

/// What compiling (and, when that succeeds, running) a probe gave: rustc's success and
/// stderr, and the program's stdout.
pub(super) struct Outcome {
    pub(super) compiled: bool,
    pub(super) rustc_stderr: String,
    pub(super) printed: String,
}

/// Compiles `source` with rustc (`$RUSTC`, else `rustc`) in a temp dir and runs it.
pub(super) fn compile_and_run(label: &str, source: &str) -> Outcome {
    let dir = TempDir::new(label);
    let file = dir.write("probe.rs", source.as_bytes());
    let exe = dir.path.join("probe");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--edition", "2021", "-o"])
        .arg(&exe)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("run {rustc}: {e}"));
    let rustc_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Outcome {
            compiled: false,
            rustc_stderr,
            printed: String::new(),
        };
    }
    let run = Command::new(Path::new(&exe)).output().expect("run the probe");
    assert!(
        run.status.success(),
        "the probe failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Outcome {
        compiled: true,
        rustc_stderr,
        printed: String::from_utf8_lossy(&run.stdout).trim().to_string(),
    }
}
