//! Writes the token seeds of `fuzz/corpus/jwt_verify/`, signed with the test-only fixture
//! keys (`tests/fixtures/keys/`) and the HS256 secret of `harness.rs`, around its `NOW`.
//!
//!     cd fuzz && cargo run --example gen_jwt_seeds -- corpus/jwt_verify
//!
//! RS256 and Ed25519 signatures are deterministic; ES256 ones are not, so re-running
//! changes the `es256-*` files only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

const NOW: i64 = 1_800_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key(alg: Algorithm, file: &str) -> EncodingKey {
    if alg == Algorithm::HS256 {
        return EncodingKey::from_secret(SECRET);
    }
    let path = format!("{}/../tests/fixtures/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    let pem = std::fs::read(&path).expect(&path);
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => unreachable!(),
    }
}

/// header.payload.signature from raw JSON text (so duplicates and odd spellings survive).
fn raw(header: &str, payload: &str, alg: Algorithm, file: &str) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key(alg, file), alg).unwrap();
    format!("{input}.{sig}")
}

fn claims(extra: serde_json::Value) -> String {
    let mut c = json!({"sub": "acme", "jti": "key-1", "iss": "https://api.open.cx", "aud": "partner-api",
                       "iat": NOW, "exp": NOW + 3600});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c.to_string()
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus/jwt_verify".into()));
    std::fs::create_dir_all(&out).unwrap();
    let hs = |kid: &str| format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
    let std_claims = claims(json!({}));
    let mut seeds: Vec<(&str, String)> = vec![
        ("hs256-valid", raw(&hs("hs-1"), &std_claims, Algorithm::HS256, "")),
        (
            "rs256-valid",
            raw(
                r#"{"alg":"RS256","kid":"rs-1"}"#,
                &std_claims,
                Algorithm::RS256,
                "test-only-rs256-1.key.pem",
            ),
        ),
        (
            "es256-valid",
            raw(
                r#"{"alg":"ES256","kid":"es-1"}"#,
                &std_claims,
                Algorithm::ES256,
                "test-only-es256-1.key.pem",
            ),
        ),
        (
            "eddsa-valid",
            raw(
                r#"{"alg":"EdDSA","kid":"ed-1"}"#,
                &std_claims,
                Algorithm::EdDSA,
                "test-only-ed25519-1.key.pem",
            ),
        ),
        (
            "eddsa-no-kid-strict-claims",
            raw(
                r#"{"alg":"EdDSA"}"#,
                r#"{"partner":"acme","org":"o-1","kid":"k-9","exp":1800003600,"nbf":1799999000}"#,
                Algorithm::EdDSA,
                "test-only-ed25519-1.key.pem",
            ),
        ),
        (
            "eddsa-kid-null",
            raw(
                r#"{"alg":"EdDSA","kid":null}"#,
                &std_claims,
                Algorithm::EdDSA,
                "test-only-ed25519-1.key.pem",
            ),
        ),
        (
            "rs256-signed-by-other-key",
            raw(
                r#"{"alg":"RS256","kid":"rs-1"}"#,
                &std_claims,
                Algorithm::RS256,
                "test-only-rs256-3.key.pem",
            ),
        ),
        (
            "eddsa-wrong-kid",
            raw(
                r#"{"alg":"EdDSA","kid":"ed-2"}"#,
                &std_claims,
                Algorithm::EdDSA,
                "test-only-ed25519-1.key.pem",
            ),
        ),
        ("hs256-unknown-kid", raw(&hs("nope"), &std_claims, Algorithm::HS256, "")),
        ("hs256-empty-kid", raw(&hs(""), &std_claims, Algorithm::HS256, "")),
        (
            "hs256-kid-number",
            raw(r#"{"alg":"HS256","kid":5}"#, &std_claims, Algorithm::HS256, ""),
        ),
        (
            "alg-none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"hs-1"}"#),
                URL_SAFE_NO_PAD.encode(&std_claims)
            ),
        ),
        (
            "alg-none-with-sig",
            format!(
                "{}.{}.AAAA",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"hs-1"}"#),
                URL_SAFE_NO_PAD.encode(&std_claims)
            ),
        ),
        (
            "alg-hs256-on-rsa-key",
            raw(r#"{"alg":"HS256","kid":"rs-1"}"#, &std_claims, Algorithm::HS256, ""),
        ),
        (
            "alg-hs384",
            raw(r#"{"alg":"HS384","kid":"hs-1"}"#, &std_claims, Algorithm::HS256, ""),
        ),
        (
            "crit-header",
            raw(
                r#"{"alg":"HS256","kid":"hs-1","crit":["exp"]}"#,
                &std_claims,
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "b64-false",
            raw(
                r#"{"alg":"HS256","kid":"hs-1","b64":false}"#,
                &std_claims,
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "duplicate-alg-header",
            raw(
                r#"{"alg":"none","alg":"HS256","kid":"hs-1"}"#,
                &std_claims,
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "jku-jwk-headers",
            raw(
                r#"{"alg":"HS256","kid":"hs-1","jku":"https://evil/jwks","jwk":{"kty":"oct","k":"AA"}}"#,
                &std_claims,
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "duplicate-sub-claim",
            raw(
                &hs("hs-1"),
                r#"{"sub":"acme","sub":"evil","iss":"https://api.open.cx","aud":"partner-api","exp":1800003600}"#,
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "escaped-duplicate-sub",
            raw(
                &hs("hs-1"),
                r#"{"sub":"acme","s\u0075b":"evil","iss":"https://api.open.cx","aud":"partner-api"}"#,
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "expired",
            raw(&hs("hs-1"), &claims(json!({"exp": NOW - 120})), Algorithm::HS256, ""),
        ),
        (
            "expired-within-leeway",
            raw(&hs("hs-1"), &claims(json!({"exp": NOW - 10})), Algorithm::HS256, ""),
        ),
        (
            "nbf-ahead",
            raw(&hs("hs-1"), &claims(json!({"nbf": NOW + 300})), Algorithm::HS256, ""),
        ),
        (
            "iat-ahead",
            raw(&hs("hs-1"), &claims(json!({"iat": NOW + 300})), Algorithm::HS256, ""),
        ),
        (
            "exp-string",
            raw(&hs("hs-1"), &claims(json!({"exp": "never"})), Algorithm::HS256, ""),
        ),
        (
            "exp-float-huge",
            raw(
                &hs("hs-1"),
                r#"{"sub":"acme","iss":"https://api.open.cx","aud":"partner-api","exp":1e308}"#,
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "no-exp",
            raw(&hs("hs-1"), &claims(json!({"exp": null})), Algorithm::HS256, ""),
        ),
        (
            "wrong-iss",
            raw(
                &hs("hs-1"),
                &claims(json!({"iss": "https://evil"})),
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "aud-list",
            raw(
                &hs("hs-1"),
                &claims(json!({"aud": ["x", "partner-api"]})),
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "aud-wrong",
            raw(&hs("hs-1"), &claims(json!({"aud": ["x"]})), Algorithm::HS256, ""),
        ),
        (
            "sub-number-org-string",
            raw(
                &hs("hs-1"),
                &claims(json!({"sub": 7, "org_id": "o-1"})),
                Algorithm::HS256,
                "",
            ),
        ),
        (
            "jti-number",
            raw(&hs("hs-1"), &claims(json!({"jti": 7})), Algorithm::HS256, ""),
        ),
        ("claims-array", raw(&hs("hs-1"), "[1,2]", Algorithm::HS256, "")),
        (
            "header-not-json",
            format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode("nope")),
        ),
        ("two-parts", "eyJhbGciOiJIUzI1NiJ9.e30".to_string()),
        ("dots", "..".to_string()),
    ];
    let good = seeds[0].1.clone();
    seeds.push(("padded-signature", format!("{good}=")));
    seeds.push(("bearer-prefix", format!("Bearer {good}")));
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    seeds.push(("flipped-signature-char", String::from_utf8(flipped).unwrap()));
    seeds.push(("too-large", format!("{good}{}", "A".repeat(8200))));
    for (name, token) in seeds {
        std::fs::write(out.join(name), token).unwrap();
    }
}
