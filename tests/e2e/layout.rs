//! The shape of `tests/` itself: one test binary.

use crate::common::repo_path;

/// Fault model: someone adds `tests/<name>.rs`; cargo would build it as a test binary of its
/// own, linking the crate and pingora once more (minutes of CI). Must hold: nothing directly
/// under `tests/` is a Rust file; areas are modules of `tests/e2e/`.
#[test]
fn one_test_binary() {
    let tests = repo_path("tests");
    let mut stray: Vec<String> = std::fs::read_dir(&tests)
        .unwrap_or_else(|e| panic!("{}: {e}", tests.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.display().to_string())
        .collect();
    stray.sort();
    assert!(
        stray.is_empty(),
        "each file directly under tests/ is a test binary of its own; make these modules of \
         tests/e2e/main.rs instead: {stray:?}"
    );
}
