//! Keys, claims and tokens: the fixture key pairs, partner and org claims, signing (also of
//! deliberately broken tokens) and JWKS documents.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::processes::repo_path;

pub const ISSUER: &str = "https://api.open.cx";
pub const AUDIENCE: &str = "partner-api";
/// The HS256 test secret (written to `keys/hs.secret` with a trailing newline).
pub const HS_SECRET: &[u8] = b"e2e-test-only-hs256-secret-0123456789abcdefABCDEF";

/// The fixture key pairs (tests/fixtures/keys, generated once with openssl; test only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Hs,
    Rs1,
    Rs2,
    Rs3,
    Es1,
    Es2,
    Ed1,
    Ed2,
}

impl Key {
    pub fn alg(self) -> Algorithm {
        match self {
            Key::Hs => Algorithm::HS256,
            Key::Rs1 | Key::Rs2 | Key::Rs3 => Algorithm::RS256,
            Key::Es1 | Key::Es2 => Algorithm::ES256,
            Key::Ed1 | Key::Ed2 => Algorithm::EdDSA,
        }
    }

    fn stem(self) -> &'static str {
        match self {
            Key::Hs => panic!("the HS key has no PEM"),
            Key::Rs1 => "test-only-rs256-1",
            Key::Rs2 => "test-only-rs256-2",
            Key::Rs3 => "test-only-rs256-3",
            Key::Es1 => "test-only-es256-1",
            Key::Es2 => "test-only-es256-2",
            Key::Ed1 => "test-only-ed25519-1",
            Key::Ed2 => "test-only-ed25519-2",
        }
    }

    pub fn private_pem(self) -> Vec<u8> {
        fixture(&format!("keys/{}.key.pem", self.stem()))
    }

    pub fn public_pem(self) -> Vec<u8> {
        fixture(&format!("keys/{}.pub.pem", self.stem()))
    }

    pub fn encoding_key(self) -> EncodingKey {
        let pem = || self.private_pem();
        match self {
            Key::Hs => EncodingKey::from_secret(HS_SECRET),
            Key::Rs1 | Key::Rs2 | Key::Rs3 => EncodingKey::from_rsa_pem(&pem()).expect("rsa pem"),
            Key::Es1 | Key::Es2 => EncodingKey::from_ec_pem(&pem()).expect("ec pem"),
            Key::Ed1 | Key::Ed2 => EncodingKey::from_ed_pem(&pem()).expect("ed pem"),
        }
    }

    /// The kid the base config gives this key (`[[jwt.keys]]`).
    pub fn config_kid(self) -> &'static str {
        match self {
            Key::Hs => "hs-1",
            Key::Rs1 => "rs-1",
            Key::Es1 => "es-1",
            Key::Ed1 => "ed-1",
            other => panic!("{other:?} is not a [[jwt.keys]] key of the base config"),
        }
    }
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = repo_path("tests/fixtures").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Partner claims: sub, jti `key-<partner>`, iss, aud, iat now, exp in an hour.
pub fn claims(partner: &str) -> Value {
    let now = now();
    json!({"sub": partner, "jti": format!("key-{partner}"), "iss": ISSUER, "aud": AUDIENCE,
           "iat": now, "exp": now + 3600})
}

/// Org claims: org_id, jti `okey-<org>`, iss, aud, iat, exp.
pub fn org_claims(org: &str) -> Value {
    let now = now();
    json!({"org_id": org, "jti": format!("okey-{org}"), "iss": ISSUER, "aud": AUDIENCE,
           "iat": now, "exp": now + 3600})
}

/// Claims with fields replaced (`Value::Null` removes a field).
pub fn with(mut claims: Value, changes: &[(&str, Value)]) -> Value {
    let obj = claims.as_object_mut().expect("claims object");
    for (k, v) in changes {
        if v.is_null() {
            obj.remove(*k);
        } else {
            obj.insert((*k).to_string(), v.clone());
        }
    }
    claims
}

/// Signs `claims` with a fixture key under `kid`.
pub fn sign(key: Key, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(key.alg());
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &key.encoding_key()).expect("encode token")
}

/// Signs with a base-config key under its configured kid.
pub fn sign_cfg(key: Key, claims: &Value) -> String {
    sign(key, Some(key.config_kid()), claims)
}

/// HS256 token for a partner (base config kid `hs-1`).
pub fn token(partner: &str) -> String {
    sign_cfg(Key::Hs, &claims(partner))
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// A JWT with an arbitrary header; signed with `signer` (key, alg) or with an empty
/// signature when `None`.
pub fn raw_jwt(header: &Value, claims: &Value, signer: Option<(&EncodingKey, Algorithm)>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match signer {
        Some((k, alg)) => jsonwebtoken::crypto::sign(input.as_bytes(), k, alg).expect("sign"),
        None => String::new(),
    };
    format!("{input}.{sig}")
}

/// A public JWK for a fixture key, with `kid`, `use: sig` and (optionally) `alg`.
pub fn jwk(key: Key, kid: &str, with_alg: bool) -> Value {
    let k = jsonwebtoken::jwk::Jwk::from_encoding_key(&key.encoding_key(), key.alg()).expect("jwk");
    let mut v = serde_json::to_value(&k).expect("jwk json");
    let obj = v.as_object_mut().expect("jwk object");
    obj.insert("kid".into(), json!(kid));
    obj.insert("use".into(), json!("sig"));
    if with_alg {
        obj.insert("alg".into(), json!(format!("{:?}", key.alg())));
    } else {
        obj.remove("alg");
    }
    obj.remove("key_ops");
    v
}

/// A JWKS document.
pub fn jwks(keys: &[Value]) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

/// SHA-256 hex digest (for `[[api_key]] sha256`).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
