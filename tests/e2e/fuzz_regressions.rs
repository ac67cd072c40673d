//! Replays the committed fuzz inputs through the fuzz checks: every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through `fuzz/harness.rs`,
//! the very code the cargo-fuzz targets run, so `cargo test` re-checks on stable, without
//! cargo-fuzz, every input the fuzzers were seeded with or once crashed on.

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

use authgate::policy::jwt::TokenError;

use crate::common::repo_path;

/// The inputs of a target; a missing or empty directory is a failure, never a skip.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = repo_path("fuzz");
    let mut all = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        assert!(!files.is_empty(), "{} holds no inputs", dir.display());
        files.sort();
        all.extend(files);
    }
    all
}

/// Runs the check on every input and names all that fail (each panic is printed above).
fn replay(target: &str, check: fn(&[u8])) {
    let mut failed = Vec::new();
    for path in inputs(target) {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: the fuzz check fails on {failed:#?}");
}

/// One test per cargo-fuzz target, named after it, replaying its inputs through its check.
macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {$(
        #[test]
        fn $target() {
            replay(stringify!($target), harness::$target);
        }
    )*};
}

replay_tests!(jwt_verify, xff, path_route, config_load, journal, openapi_validate);

/// The token seeds are what their names say (so the fuzzer starts from real tokens, valid
/// and subtly invalid, and a change to the fixture keys or the shipped `[jwt]` shows here).
/// Verdicts are for all keys and the shipped `[jwt]`, at `harness::NOW`.
#[test]
fn token_seeds_mean_what_their_names_say() {
    use TokenError::*;
    let table: &[(&str, Option<TokenError>)] = &[
        ("hs256-valid", None),
        ("rs256-valid", None),
        ("es256-valid", None),
        ("eddsa-valid", None),
        ("aud-list", None),
        ("expired-within-leeway", None),
        ("no-exp", None),
        ("jku-jwk-headers", None),
        ("exp-float-huge", None),
        ("sub-number-org-string", None),
        ("alg-hs256-on-rsa-key", Some(AlgorithmMismatch)),
        ("alg-hs384", Some(AlgorithmNotAllowed)),
        ("alg-none", Some(Malformed)),
        ("alg-none-with-sig", Some(AlgorithmNotAllowed)),
        ("aud-wrong", Some(WrongAudience)),
        ("b64-false", Some(CritHeader)),
        ("crit-header", Some(CritHeader)),
        ("bearer-prefix", Some(Malformed)),
        ("claims-array", Some(BadClaims)),
        ("dots", Some(Malformed)),
        ("duplicate-alg-header", Some(BadHeader)),
        ("duplicate-sub-claim", Some(BadClaims)),
        ("escaped-duplicate-sub", Some(BadClaims)),
        ("eddsa-kid-null", Some(UnknownKey)),
        ("eddsa-no-kid-strict-claims", Some(UnknownKey)),
        ("eddsa-wrong-kid", Some(BadSignature)),
        ("exp-string", Some(BadClaims)),
        ("expired", Some(Expired)),
        ("flipped-signature-char", Some(BadSignature)),
        ("header-not-json", Some(BadHeader)),
        ("hs256-empty-kid", Some(UnknownKey)),
        ("hs256-unknown-kid", Some(UnknownKey)),
        ("hs256-kid-number", Some(BadHeader)),
        ("iat-ahead", Some(IssuedInFuture)),
        ("jti-number", Some(BadClaims)),
        ("nbf-ahead", Some(NotYetValid)),
        ("padded-signature", Some(Malformed)),
        ("rs256-signed-by-other-key", Some(BadSignature)),
        ("too-large", Some(TooLarge)),
        ("two-parts", Some(Malformed)),
        ("wrong-iss", Some(WrongIssuer)),
    ];
    let dir = repo_path("fuzz/corpus/jwt_verify");
    for (name, want) in table {
        let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = harness::jwt_verdicts(&data)[0].as_ref().err().copied();
        assert_eq!(got, *want, "{name}");
    }
    // without kid (or kid null) the only key of a one-key set verifies
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert!(harness::jwt_verdicts(&read("eddsa-kid-null"))[2].is_ok());
    assert!(harness::jwt_verdicts(&read("eddsa-no-kid-strict-claims"))[3].is_ok());
}
