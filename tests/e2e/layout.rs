//! The shape of `tests/` itself: one test binary.

use crate::common::{read_repo, repo_path, TempDir};

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

/// A dependency's spec without `optional`, as a comparable value.
fn spec_without_optional(spec: &toml::Value) -> toml::Value {
    match spec {
        toml::Value::Table(t) => {
            let mut t = t.clone();
            t.remove("optional");
            if t.len() == 1 && t.contains_key("version") {
                return t["version"].clone();
            }
            toml::Value::Table(t)
        }
        other => other.clone(),
    }
}

/// Fault model: a dependency or dev-dependency is added to the main crate, or one's
/// features change, and fuzz/Cargo.toml is not told. The fuzz workspace then resolves that
/// crate, and every crate above it, with other features, and CI's fuzz build (fuzz/ci.sh,
/// into the main target/) compiles them all again instead of reusing the main build's:
/// minutes of CI, with nothing failing. Must hold: the fuzz manifest's `main-build-deps`
/// feature names each of the main crate's `gateway` dependencies and dev-dependencies with
/// the same spec, and fuzz/Cargo.lock pins every crate of Cargo.lock at the same version.
#[test]
fn fuzz_build_resolves_dependencies_like_the_main_build() {
    let main: toml::Table = read_repo("Cargo.toml").parse().expect("Cargo.toml");
    let fuzz: toml::Table = read_repo("fuzz/Cargo.toml").parse().expect("fuzz/Cargo.toml");
    let deps = |t: &toml::Table, key: &str| t.get(key).and_then(|v| v.as_table()).cloned().unwrap_or_default();
    let (main_deps, main_dev, fuzz_deps) = (
        deps(&main, "dependencies"),
        deps(&main, "dev-dependencies"),
        deps(&fuzz, "dependencies"),
    );
    let names = |features: &toml::Table, feature: &str| -> Vec<String> {
        features[feature]
            .as_array()
            .unwrap_or_else(|| panic!("feature {feature}"))
            .iter()
            .filter_map(|v| v.as_str()?.strip_prefix("dep:").map(str::to_string))
            .collect()
    };
    let gateway = names(main["features"].as_table().expect("[features]"), "gateway");
    let mirrored = names(fuzz["features"].as_table().expect("fuzz [features]"), "main-build-deps");
    assert!(gateway.len() > 5, "the gateway feature's dependencies: {gateway:?}");

    let mut problems = Vec::new();
    let wanted = gateway.iter().map(|n| (n, &main_deps[n])).chain(main_dev.iter());
    for (name, spec) in wanted {
        match fuzz_deps.get(name) {
            None => problems.push(format!("{name}: missing from fuzz/Cargo.toml")),
            Some(f) if spec_without_optional(f) != spec_without_optional(spec) => {
                problems.push(format!("{name}: fuzz has {f}, the main crate {spec}"))
            }
            Some(f) => {
                let optional = f.get("optional").and_then(|o| o.as_bool()) == Some(true);
                if optional && !mirrored.contains(name) {
                    problems.push(format!("{name}: not enabled by the main-build-deps feature"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "fuzz/Cargo.toml drifted from Cargo.toml:\n{}",
        problems.join("\n")
    );

    let packages = |rel: &str| -> std::collections::BTreeSet<(String, String)> {
        let lock: toml::Table = read_repo(rel).parse().expect("lock file");
        lock["package"]
            .as_array()
            .expect("[[package]]")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["version"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (main_lock, fuzz_lock) = (packages("Cargo.lock"), packages("fuzz/Cargo.lock"));
    let missing: Vec<_> = main_lock.difference(&fuzz_lock).collect();
    assert!(
        missing.is_empty(),
        "fuzz/Cargo.lock lacks these crates of Cargo.lock at the same version (copy Cargo.lock to \
         fuzz/Cargo.lock and run `cargo metadata --manifest-path fuzz/Cargo.toml --offline`): {missing:?}"
    );
}
