//! The shape of `tests/` itself: one test binary.

use crate::common::{repo_path, TempDir};

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

/// Runs `cargo build --release --all-targets` on a one-file crate through CI's workspace
/// wrapper, with the lint flags `.ci/run` gives it; the exit status and stderr.
/// The third value: whether rustc's own artifact (`libprobe.rlib`) was written.
fn build_through_lint_wrapper(label: &str, lib_rs: &str) -> (bool, String, bool) {
    let dir = TempDir::new(label);
    let root = dir.path.clone();
    std::fs::create_dir_all(root.join("src")).expect("src");
    std::fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .expect("Cargo.toml");
    std::fs::write(root.join("src/lib.rs"), lib_rs).expect("lib.rs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--release", "--offline", "--all-targets"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env("RUSTC_WORKSPACE_WRAPPER", repo_path(".ci/lint-then-compile"))
        .env("CLIPPY_ARGS", "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rlib = root.join("target/release/libprobe.rlib").is_file();
    (out.status.success(), stderr, rlib)
}

/// Fault model: CI's clippy runs inside the build (`.ci/lint-then-compile` as the workspace
/// wrapper) instead of `cargo clippy`; a clippy release that stops reading `CLIPPY_ARGS`, or
/// a change to the wrapper's argument rewriting, would let code clippy rejects through with
/// CI green. Must hold: a clippy finding (in library code and in test code) fails the build
/// with clippy's message, and a clean crate builds to its real artifact.
#[test]
fn ci_lint_wrapper_fails_the_build_on_a_clippy_finding() {
    let (ok, stderr, _) = build_through_lint_wrapper(
        "lint-dirty",
        "pub fn two() -> i32 {\n    let x = 2i32;\n    x.clone()\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {\n        assert_eq!(super::two() == 2, true);\n    }\n}\n",
    );
    assert!(!ok, "a clippy finding must fail the build:\n{stderr}");
    assert!(
        stderr.contains("which implements the `Copy` trait"),
        "clippy's clone_on_copy in the library:\n{stderr}"
    );
    assert!(
        stderr.contains("literal bool"),
        "clippy's bool_assert_comparison in the tests:\n{stderr}"
    );

    let (ok, stderr, rlib) = build_through_lint_wrapper("lint-clean", "pub fn two() -> i32 {\n    2\n}\n");
    assert!(ok, "a clean crate builds:\n{stderr}");
    assert!(rlib, "rustc's own artifact, libprobe.rlib, was written");
}
