//! `authgate token`: mint partner or org tokens with keys the config names, for operators,
//! the demo and tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::config::load::strip_one_newline;
use crate::config::{KeyMaterial, KeySource, Settings};

/// Whose token to mint.
#[derive(Debug, Clone)]
pub enum Subject {
    Partner(String),
    Org(String),
}

/// What to put in the token besides the subject.
#[derive(Debug, Clone, Default)]
pub struct MintOptions {
    /// `key_id_claim` value (the id revocation is by).
    pub key_id: Option<String>,
    /// Signing key; default: the first key with private material.
    pub kid: Option<String>,
    /// `exp` = now + ttl; none = no `exp`.
    pub ttl: Option<Duration>,
}

fn signing_key(k: &KeySource) -> Result<EncodingKey, String> {
    let family = k.algorithm.family();
    let bad = |e: jsonwebtoken::errors::Error| format!("key {:?}: {e}", k.kid);
    match (&k.material, family) {
        (KeyMaterial::SecretEnv(var), AlgorithmFamily::Hmac) => match std::env::var_os(var) {
            Some(v) if !v.is_empty() => Ok(EncodingKey::from_secret(v.as_encoded_bytes())),
            _ => Err(format!("key {:?}: environment variable {var} is not set", k.kid)),
        },
        (KeyMaterial::SecretFile(p), AlgorithmFamily::Hmac) => std::fs::read(p)
            .map(|b| EncodingKey::from_secret(strip_one_newline(&b)))
            .map_err(|e| format!("key {:?}: cannot read {}: {e}", k.kid, p.display())),
        (KeyMaterial::PublicKeyFile(_), fam) => {
            let path = k
                .private_key_file
                .as_ref()
                .ok_or_else(|| format!("key {:?} has no private_key_file to sign with", k.kid))?;
            let pem =
                std::fs::read(path).map_err(|e| format!("key {:?}: cannot read {}: {e}", k.kid, path.display()))?;
            match fam {
                AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem).map_err(bad),
                AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem).map_err(bad),
                AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&pem).map_err(bad),
                AlgorithmFamily::Hmac => Err(format!("key {:?}: HMAC keys take a secret", k.kid)),
            }
        }
        _ => Err(format!("key {:?}: key material does not fit its algorithm", k.kid)),
    }
}

/// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
pub(crate) const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A fresh Ed25519 pair as (PKCS#8 private PEM, SPKI public PEM), for `authgate demo`.
pub(crate) fn generate_ed25519_pem() -> anyhow::Result<(String, String)> {
    use ring::signature::KeyPair as _;
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|_| anyhow::anyhow!("cannot derive an Ed25519 key"))?;
    let private: Vec<u8> = ED25519_PKCS8_PREFIX.iter().chain(seed.iter()).copied().collect();
    let public: Vec<u8> = ED25519_SPKI_PREFIX
        .iter()
        .chain(pair.public_key().as_ref())
        .copied()
        .collect();
    Ok((pem("PRIVATE KEY", &private), pem("PUBLIC KEY", &public)))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn can_sign(k: &KeySource) -> bool {
    !matches!(k.material, KeyMaterial::PublicKeyFile(_)) || k.private_key_file.is_some()
}

/// Mints a token as `authgate token` prints it.
pub fn mint(settings: &Settings, subject: &Subject, opts: &MintOptions) -> Result<String, String> {
    let key = match &opts.kid {
        Some(kid) => settings
            .keys
            .iter()
            .find(|k| &k.kid == kid)
            .ok_or_else(|| format!("no [[jwt.keys]] entry with kid {kid:?}"))?,
        None => settings
            .keys
            .iter()
            .find(|k| can_sign(k))
            .ok_or("no [[jwt.keys]] entry can sign (HS secret or private_key_file)")?,
    };
    let jwt = &settings.fixed.jwt;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut claims = Map::new();
    match subject {
        Subject::Partner(id) => claims.insert(jwt.partner_claim.clone(), Value::from(id.as_str())),
        Subject::Org(id) => claims.insert(jwt.org_claim.clone(), Value::from(id.as_str())),
    };
    if let Some(jti) = &opts.key_id {
        claims.insert(jwt.key_id_claim.clone(), Value::from(jti.as_str()));
    }
    if let Some(iss) = &jwt.issuer {
        claims.insert("iss".into(), Value::from(iss.as_str()));
    }
    match jwt.audience.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), Value::from(one.as_str()));
        }
        many => {
            claims.insert("aud".into(), Value::from(many.to_vec()));
        }
    }
    claims.insert("iat".into(), Value::from(now));
    if let Some(ttl) = opts.ttl {
        claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
    }
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &Value::Object(claims), &signing_key(key)?).map_err(|e| e.to_string())
}
