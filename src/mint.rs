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
    check_ids(subject, opts, jwt.require_key_id)?;
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

/// Refuses to mint what the gateway would refuse (docs/reference.md#pipeline, step 2): an id
/// with a control character or over 256 bytes, or no key id under `[jwt] require_key_id`.
fn check_ids(subject: &Subject, opts: &MintOptions, require_key_id: bool) -> Result<(), String> {
    let (what, id) = match subject {
        Subject::Partner(id) => ("partner id", id),
        Subject::Org(id) => ("org id", id),
    };
    let named = std::iter::once((what, id)).chain(opts.key_id.as_ref().map(|k| ("key id", k)));
    for (what, id) in named {
        if let Some(why) = crate::policy::identity::id_problem(id) {
            return Err(format!("the {what} {id:?} {why}: the gateway would refuse the token"));
        }
    }
    if require_key_id && opts.key_id.is_none() {
        return Err("[jwt] require_key_id = true: pass --key-id (a token without one is refused)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_the_gateway_would_refuse_are_not_minted() {
        let partner = |id: &str| Subject::Partner(id.into());
        let key = |k: &str| MintOptions {
            key_id: Some(k.into()),
            ..MintOptions::default()
        };
        assert!(check_ids(&partner("acme"), &key("k-1"), true).is_ok());
        assert!(check_ids(&partner("acme"), &MintOptions::default(), false).is_ok());
        let err = check_ids(&partner("acme"), &MintOptions::default(), true).unwrap_err();
        assert!(err.contains("--key-id"), "{err}");
        let err = check_ids(&Subject::Org("o\r\n1".into()), &key("k"), false).unwrap_err();
        assert!(err.contains("org id") && err.contains("control character"), "{err}");
        let err = check_ids(&partner("acme"), &key(&"k".repeat(300)), false).unwrap_err();
        assert!(err.contains("key id") && err.contains("256 bytes"), "{err}");
    }
}
