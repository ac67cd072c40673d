//! JWKS documents (RFC 7517) into verification keys.
//!
//! Only public signature keys are taken: RSA, EC P-256/P-384 and OKP Ed25519. Symmetric
//! (`oct`) keys, keys with `use` other than `sig`, and keys without `kid` are skipped and
//! reported, never guessed at.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::demo_keys::is_burned_raw;
use crate::policy::jwt::VerifyKey;

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The keys of a JWKS document usable with `allowed` algorithms, plus a note for each key
/// that was skipped. Fails only when the document itself is not a JWKS.
pub(crate) fn parse(text: &[u8], allowed: &[Algorithm]) -> Result<(Vec<Arc<VerifyKey>>, Vec<String>), String> {
    let doc: Document = serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in doc.keys.into_iter().enumerate() {
        match key(raw, allowed) {
            Ok(k) => keys.push(Arc::new(k)),
            Err(why) => skipped.push(format!("key #{i} skipped: {why}")),
        }
    }
    Ok((keys, skipped))
}

fn key(raw: serde_json::Value, allowed: &[Algorithm]) -> Result<VerifyKey, String> {
    let jwk: Jwk = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    let kid = jwk.kid.clone().filter(|k| !k.is_empty()).ok_or("no kid")?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(format!("kid {kid}: use is not \"sig\""));
    }
    let missing = |f: &str| format!("kid {kid}: missing {f}");
    let (family, key): (Vec<Algorithm>, DecodingKey) = match jwk.kty.as_str() {
        "RSA" => {
            let n = jwk.n.as_deref().ok_or_else(|| missing("n"))?;
            let e = jwk.e.as_deref().ok_or_else(|| missing("e"))?;
            let key = DecodingKey::from_rsa_components(n, e).map_err(|e| format!("kid {kid}: {e}"))?;
            (
                vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                key,
            )
        }
        "EC" => {
            let alg = match jwk.crv.as_deref() {
                Some("P-256") => Algorithm::ES256,
                Some("P-384") => Algorithm::ES384,
                other => return Err(format!("kid {kid}: unsupported curve {other:?}")),
            };
            let x = jwk.x.as_deref().ok_or_else(|| missing("x"))?;
            let y = jwk.y.as_deref().ok_or_else(|| missing("y"))?;
            let key = DecodingKey::from_ec_components(x, y).map_err(|e| format!("kid {kid}: {e}"))?;
            (vec![alg], key)
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err(format!("kid {kid}: unsupported curve {:?}", jwk.crv));
            }
            let x = jwk.x.as_deref().ok_or_else(|| missing("x"))?;
            if URL_SAFE_NO_PAD.decode(x).is_ok_and(|raw| is_burned_raw(&raw)) {
                return Err(format!(
                    "kid {kid}: the old demo key (its private half is public) is refused"
                ));
            }
            let key = DecodingKey::from_ed_components(x).map_err(|e| format!("kid {kid}: {e}"))?;
            (vec![Algorithm::EdDSA], key)
        }
        other => return Err(format!("kid {kid}: key type {other:?} is not accepted")),
    };
    let algorithms: Vec<Algorithm> = match jwk.alg.as_deref() {
        Some(a) => {
            let alg: Algorithm = a.parse().map_err(|_| format!("kid {kid}: unknown alg {a:?}"))?;
            if !family.contains(&alg) {
                return Err(format!("kid {kid}: alg {a} does not fit key type {}", jwk.kty));
            }
            vec![alg]
        }
        None => family,
    };
    let algorithms: Vec<Algorithm> = algorithms.into_iter().filter(|a| allowed.contains(a)).collect();
    if algorithms.is_empty() {
        return Err(format!(
            "kid {kid}: none of its algorithms is allowed by [jwt] algorithms"
        ));
    }
    VerifyKey::new(kid, algorithms, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_what_it_cannot_use() {
        let doc = br#"{"keys":[
            {"kty":"oct","kid":"s","k":"c2VjcmV0"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed-ok"}
        ]}"#;
        let (keys, skipped) = parse(doc, &[Algorithm::EdDSA]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid, "ed-ok");
        assert_eq!(skipped.len(), 3);
    }

    #[test]
    fn alg_must_fit_and_be_allowed() {
        let doc = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","alg":"RS256"}]}"#;
        assert_eq!(parse(doc, &[Algorithm::EdDSA, Algorithm::RS256]).unwrap().0.len(), 0);
        let doc =
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}]}"#;
        assert_eq!(parse(doc, &[Algorithm::RS256]).unwrap().0.len(), 0);
    }

    #[test]
    fn not_a_document() {
        assert!(parse(b"[]", &[Algorithm::RS256]).is_err());
        assert!(parse(b"nope", &[Algorithm::RS256]).is_err());
    }
}
