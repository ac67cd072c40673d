//! Bearer JWT verification (docs/reference.md#pipeline, step 2), strict by construction.
//!
//! The header and claims are parsed here rather than by `jsonwebtoken::decode`, so that
//! everything docs/reference.md#pipeline (step 2) asks is checked explicitly: the algorithm is pinned per key and
//! must be allowed, `crit` is rejected, numeric dates must be numbers, `nbf`/`iat` are
//! checked with leeway, duplicate JSON keys are refused. `jsonwebtoken` reads key files and
//! JWKs; the signature arithmetic is aws-lc-rs on keys parsed once, when the key set is
//! built ([`SignatureCheck`]), so a flood of bad signatures costs one verification each and
//! no allocation. `jku`, `x5u`, `jwk` and `x5c` headers are never followed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_lc_rs::{hmac, signature as sig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::jose_header::{self, HeaderProblem, JoseHeader};

/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_LEN: usize = 8192;

/// Why a token was refused. The partner sees `message()`; the token itself is never echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    Malformed,
    DuplicateHeader,
    BadHeader,
    CritHeader,
    AlgorithmNotAllowed,
    UnknownKey,
    AlgorithmMismatch,
    BadSignature,
    BadClaims,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingExp,
    WrongIssuer,
    WrongAudience,
    MissingPrincipal,
    WrongTokenKind,
    /// The principal or key id has a control character or is over 256 bytes
    /// ([`super::identity`]).
    BadIdentity,
    /// `[jwt] require_key_id` and the token has no `key_id_claim`: it could never be revoked.
    MissingKeyId,
}

impl TokenError {
    /// What failed, in words a partner can act on.
    pub(crate) fn message(self) -> &'static str {
        match self {
            TokenError::TooLarge => "Invalid API key: token is larger than 8 KiB",
            TokenError::Malformed => "Invalid API key: not a well-formed JWT",
            TokenError::DuplicateHeader => "Invalid API key: send exactly one Authorization header",
            TokenError::BadHeader => "Invalid API key: malformed JWT header",
            TokenError::CritHeader => "Invalid API key: critical header extensions are not supported",
            TokenError::AlgorithmNotAllowed => "Invalid API key: signing algorithm not allowed",
            TokenError::UnknownKey => "Invalid API key: unknown signing key",
            TokenError::AlgorithmMismatch => "Invalid API key: algorithm does not match the signing key",
            TokenError::BadSignature => "Invalid API key: signature does not verify",
            TokenError::BadClaims => "Invalid API key: malformed claims",
            TokenError::Expired => "Invalid API key: token has expired",
            TokenError::NotYetValid => "Invalid API key: token is not valid yet (nbf)",
            TokenError::IssuedInFuture => "Invalid API key: token issued in the future (iat)",
            TokenError::MissingExp => "Invalid API key: token has no expiry (exp)",
            TokenError::WrongIssuer => "Invalid API key: wrong issuer",
            TokenError::WrongAudience => "Invalid API key: wrong audience",
            TokenError::MissingPrincipal => "Invalid API key: the identity claim is missing or not a string",
            TokenError::WrongTokenKind => "Invalid API key: this kind of key is not accepted on this endpoint",
            TokenError::BadIdentity => {
                "Invalid API key: an identity claim has a control character or is longer than 256 bytes"
            }
            TokenError::MissingKeyId => "Invalid API key: the token has no key id, and this gateway requires one",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A verification key with the algorithms it may be used with.
pub struct VerifyKey {
    pub kid: String,
    /// Algorithms this key verifies (one for configured keys; a JWKS key without `alg`
    /// serves the allowed algorithms of its type).
    pub algorithms: Vec<Algorithm>,
    /// The key parsed for each of `algorithms`, in the same order.
    checks: Vec<SignatureCheck>,
}

/// A key ready to check signatures of one algorithm: parsed (RSA modulus, EC point, HMAC
/// key schedule) when the key set is built, not per token.
enum SignatureCheck {
    Hmac(Box<hmac::Key>),
    Public(sig::ParsedPublicKey),
}

impl SignatureCheck {
    fn new(alg: Algorithm, key: &DecodingKey) -> Result<Self, String> {
        use jsonwebtoken::DecodingKeyKind as Kind;
        let public = |params: &'static dyn sig::VerificationAlgorithm| -> Result<Self, String> {
            let parsed = match key.kind() {
                Kind::SecretOrDer(bytes) => sig::ParsedPublicKey::new(params, bytes),
                Kind::RsaModulusExponent { n, e } => {
                    let rsa = rsa_params(alg).ok_or_else(|| format!("an RSA key cannot verify {alg:?}"))?;
                    sig::RsaPublicKeyComponents { n, e }.to_parsed_public_key(rsa)
                }
            };
            parsed
                .map(SignatureCheck::Public)
                .map_err(|e| format!("not a usable {alg:?} public key ({e})"))
        };
        let secret = |h: hmac::Algorithm| -> Result<Self, String> {
            match key.kind() {
                Kind::SecretOrDer(bytes) => Ok(SignatureCheck::Hmac(Box::new(hmac::Key::new(h, bytes)))),
                Kind::RsaModulusExponent { .. } => Err(format!("an RSA key cannot verify {alg:?}")),
            }
        };
        match alg {
            Algorithm::HS256 => secret(hmac::HMAC_SHA256),
            Algorithm::HS384 => secret(hmac::HMAC_SHA384),
            Algorithm::HS512 => secret(hmac::HMAC_SHA512),
            Algorithm::ES256 => public(&sig::ECDSA_P256_SHA256_FIXED),
            Algorithm::ES384 => public(&sig::ECDSA_P384_SHA384_FIXED),
            Algorithm::EdDSA => public(&sig::ED25519),
            rsa => match rsa_params(rsa) {
                Some(params) => public(params),
                None => Err(format!("algorithm {rsa:?} is not supported")),
            },
        }
    }

    /// Whether `signature` (raw bytes) signs `message`; constant time for HMAC.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            SignatureCheck::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            SignatureCheck::Public(key) => key.verify_sig(message, signature).is_ok(),
        }
    }
}

/// The parameters `jsonwebtoken`'s aws-lc provider uses (2048 to 8192-bit moduli).
fn rsa_params(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// Longest raw signature accepted: an RSA-8192 signature (1024 bytes). Longer ones are
/// refused before any arithmetic.
const MAX_SIGNATURE_LEN: usize = 1024;

impl VerifyKey {
    /// A key for `algorithms`, parsed for each of them now: a key that does not fit one of
    /// its algorithms is refused here (a config problem), not at the first token.
    pub fn new(kid: impl Into<String>, algorithms: Vec<Algorithm>, key: &DecodingKey) -> Result<Self, String> {
        let kid = kid.into();
        let checks = algorithms
            .iter()
            .map(|&alg| SignatureCheck::new(alg, key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("key {kid:?}: {e}"))?;
        Ok(VerifyKey {
            kid,
            algorithms,
            checks,
        })
    }

    fn check_for(&self, alg: Algorithm) -> Option<&SignatureCheck> {
        let i = self.algorithms.iter().position(|a| *a == alg)?;
        self.checks.get(i)
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The verification keys in force. Each set gets a new generation, so cached verdicts of
/// an older set are never reused after keys change.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    generation: u64,
    by_kid: HashMap<String, Arc<VerifyKey>>,
}

impl KeySet {
    /// A new set (later keys with the same kid replace earlier ones; config validation
    /// refuses duplicates among configured keys).
    pub fn new(keys: impl IntoIterator<Item = VerifyKey>) -> Self {
        Self::from_shared(keys.into_iter().map(Arc::new))
    }

    /// A new set from keys shared with other sets (a JWKS refresh keeps the configured keys).
    pub(crate) fn from_shared(keys: impl IntoIterator<Item = Arc<VerifyKey>>) -> Self {
        let by_kid = keys.into_iter().map(|k| (k.kid.clone(), k)).collect();
        KeySet {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            by_kid,
        }
    }

    /// Unique id of this set's contents (part of the token-cache key).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether there are no keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    /// The key for a token: by `kid`, or the only key when there is one and no `kid`.
    fn select(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).map(|k| &**k),
            None if self.by_kid.len() == 1 => self.by_kid.values().next().map(|k| &**k),
            None => None,
        }
    }
}

/// `[jwt]` settings that do not change without a restart.
#[derive(Debug, Clone)]
pub struct JwtPolicy {
    pub algorithms: Vec<Algorithm>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway_secs: f64,
    pub require_exp: bool,
    pub partner_claim: String,
    pub org_claim: String,
    pub key_id_claim: String,
    pub org_must_be_listed: bool,
    /// `[jwt] require_key_id`: a token without `key_id_claim` is invalid (every key revocable).
    pub require_key_id: bool,
}

/// A claim that names an identity, as found in the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdClaim {
    Absent,
    NotAString,
    Str(Arc<str>),
}

impl IdClaim {
    fn from_value(v: Option<&Value>) -> IdClaim {
        match v {
            None => IdClaim::Absent,
            Some(Value::String(s)) => IdClaim::Str(Arc::from(s.as_str())),
            Some(_) => IdClaim::NotAString,
        }
    }

    /// The string value, if the claim is a string.
    pub(crate) fn as_str(&self) -> Option<&Arc<str>> {
        match self {
            IdClaim::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What a verified token says; cached, so time claims are re-checked on every use.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub partner: IdClaim,
    pub org: IdClaim,
    /// The key id (`key_id_claim`); `None` when absent.
    pub key_id: Option<Arc<str>>,
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub iat: Option<f64>,
}

impl VerifiedToken {
    /// exp / nbf / iat against `now` (seconds since the epoch) with leeway.
    pub(crate) fn check_times(&self, policy: &JwtPolicy, now: f64) -> Result<(), TokenError> {
        let leeway = policy.leeway_secs;
        match self.exp {
            Some(exp) if now > exp + leeway => return Err(TokenError::Expired),
            None if policy.require_exp => return Err(TokenError::MissingExp),
            _ => {}
        }
        if self.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(TokenError::NotYetValid);
        }
        if self.iat.is_some_and(|iat| iat > now + leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(())
    }
}

/// The `key_id_claim`: a string that may serve as an id ([`super::identity`]), or absent
/// unless `require_key_id`.
fn key_id_of(claim: Option<&Value>, policy: &JwtPolicy) -> Result<Option<Arc<str>>, TokenError> {
    match claim {
        None if policy.require_key_id => Err(TokenError::MissingKeyId),
        None => Ok(None),
        Some(Value::String(s)) if !super::identity::valid_id(s) => Err(TokenError::BadIdentity),
        Some(Value::String(s)) => Ok(Some(Arc::from(s.as_str()))),
        Some(_) => Err(TokenError::BadClaims),
    }
}

/// Bytes a base64url part of a compact JWS may contain. A table, because this check runs
/// over the payload and signature of every token, flood included.
const BASE64URL_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    t
};

/// Whether every byte of `part` is base64url; without a branch per byte.
fn is_base64url(part: &str) -> bool {
    part.bytes().fold(true, |ok, b| ok & BASE64URL_BYTE[usize::from(b)])
}

/// The three parts of a compact JWS, each non-empty and base64url. The header's bytes are
/// left to [`jose_header::with_header`] (its decode refuses what is not base64url, as
/// `Malformed` too), which spares a scan of the part that repeats from token to token.
fn compact_parts(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let (h64, rest) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let (p64, s64) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    // a third dot lands in the signature, which is then not base64url
    if h64.is_empty() || p64.is_empty() || s64.is_empty() || !is_base64url(p64) || !is_base64url(s64) {
        return Err(TokenError::Malformed);
    }
    Ok((h64, p64, s64))
}

/// The key check a header names: an allowed algorithm, a known key, the key serving that
/// algorithm.
fn signature_check<'k>(
    header: &JoseHeader,
    keys: &'k KeySet,
    policy: &JwtPolicy,
) -> Result<&'k SignatureCheck, TokenError> {
    if !policy.algorithms.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    let key = keys.select(header.kid.as_deref()).ok_or(TokenError::UnknownKey)?;
    key.check_for(header.alg).ok_or(TokenError::AlgorithmMismatch)
}

impl From<HeaderProblem> for TokenError {
    fn from(p: HeaderProblem) -> Self {
        match p {
            HeaderProblem::NotBase64 => TokenError::Malformed,
            HeaderProblem::NotAHeader => TokenError::BadHeader,
            HeaderProblem::Critical => TokenError::CritHeader,
            HeaderProblem::UnknownAlgorithm => TokenError::AlgorithmNotAllowed,
        }
    }
}

/// Verifies signature, header and claims of `token` (without the `Bearer ` prefix).
/// Does not look at the cache; see [`super::token_cache`].
pub fn verify(token: &str, keys: &KeySet, policy: &JwtPolicy, now: f64) -> Result<VerifiedToken, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let (h64, p64, s64) = compact_parts(token)?;
    let check = jose_header::with_header(h64, |h| signature_check(h, keys, policy)).map_err(TokenError::from)??;
    let signed = &token[..h64.len() + 1 + p64.len()];
    // a signature longer than the buffer does not fit: refused like a wrong one
    let mut raw = [0u8; MAX_SIGNATURE_LEN];
    let n = URL_SAFE_NO_PAD
        .decode_slice(s64, &mut raw)
        .map_err(|_| TokenError::BadSignature)?;
    #[cfg(test)]
    tests::CRYPTO_CALLS.with(|c| c.set(c.get() + 1));
    // The only place a signature is computed: everything above refused what it could for
    // the price of a base64 decode and a map lookup.
    if !check.verify(signed.as_bytes(), &raw[..n]) {
        return Err(TokenError::BadSignature);
    }
    let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| TokenError::Malformed)?;
    let claims: StrictMap = serde_json::from_slice(&payload).map_err(|_| TokenError::BadClaims)?;
    let claims = claims.0;

    let date = |name: &str| -> Result<Option<f64>, TokenError> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(TokenError::BadClaims),
            Some(_) => Err(TokenError::BadClaims),
        }
    };
    let verified = VerifiedToken {
        partner: IdClaim::from_value(claims.get(&policy.partner_claim)),
        org: IdClaim::from_value(claims.get(&policy.org_claim)),
        key_id: key_id_of(claims.get(&policy.key_id_claim), policy)?,
        exp: date("exp")?,
        nbf: date("nbf")?,
        iat: date("iat")?,
    };
    if let Some(iss) = &policy.issuer {
        match claims.get("iss") {
            Some(Value::String(s)) if s == iss => {}
            _ => return Err(TokenError::WrongIssuer),
        }
    }
    if !policy.audience.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => policy.audience.iter().any(|a| a == s),
            Some(Value::Array(items)) => items
                .iter()
                .any(|v| v.as_str().is_some_and(|s| policy.audience.iter().any(|a| a == s))),
            _ => false,
        };
        if !ok {
            return Err(TokenError::WrongAudience);
        }
    }
    verified.check_times(policy, now)?;
    Ok(verified)
}

/// A JSON object that refuses duplicate keys (a token whose claims mean different things
/// to different parsers is not a token we accept).
struct StrictMap(serde_json::Map<String, Value>);

impl<'de> Deserialize<'de> for StrictMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictMap, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!("duplicate claim {k}")));
                    }
                    let v: Value = map.next_value()?;
                    out.insert(k, v);
                }
                Ok(StrictMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JHeader};
    use serde_json::json;

    pub(crate) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: f64 = 1_800_000_000.0;

    pub(crate) fn policy() -> JwtPolicy {
        JwtPolicy {
            algorithms: vec![Algorithm::HS256, Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            issuer: Some("https://api.open.cx".into()),
            audience: vec!["partner-api".into()],
            leeway_secs: 30.0,
            require_exp: false,
            partner_claim: "sub".into(),
            org_claim: "org_id".into(),
            key_id_claim: "jti".into(),
            org_must_be_listed: false,
            require_key_id: false,
        }
    }

    pub(crate) fn hs_keys() -> KeySet {
        KeySet::new([VerifyKey::new("hs-1", vec![Algorithm::HS256], &DecodingKey::from_secret(SECRET)).unwrap()])
    }

    thread_local! {
        /// Signature computations on this test thread.
        pub(crate) static CRYPTO_CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The public half of a fresh Ed25519 pair (the raw key, as a PEM or JWK would give it).
    fn ed25519_public() -> DecodingKey {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        let pair = Ed25519KeyPair::generate().unwrap();
        DecodingKey::from_ed_der(pair.public_key().as_ref())
    }

    fn crypto_calls() -> usize {
        CRYPTO_CALLS.with(|c| c.get())
    }

    #[test]
    fn unknown_kids_and_mismatched_algorithms_never_reach_the_crypto() {
        let keys = KeySet::new([
            VerifyKey::new("hs-1", vec![Algorithm::HS256], &DecodingKey::from_secret(SECRET)).unwrap(),
            VerifyKey::new("ed-1", vec![Algorithm::EdDSA], &ed25519_public()).unwrap(),
        ]);
        let before = crypto_calls();
        let refused = [
            (mint(&claims(), Some("nope")), TokenError::UnknownKey),
            (mint(&claims(), None), TokenError::UnknownKey),
            // an HS256 token naming the Ed25519 key: the algorithm does not fit the key
            (mint(&claims(), Some("ed-1")), TokenError::AlgorithmMismatch),
            (
                raw(&json!({"alg": "none", "kid": "hs-1"}), &claims()),
                TokenError::AlgorithmNotAllowed,
            ),
            (
                raw(&json!({"alg": "HS256", "kid": "hs-1", "crit": ["x"]}), &claims()),
                TokenError::CritHeader,
            ),
        ];
        for (tok, want) in refused {
            assert_eq!(verify(&tok, &keys, &policy(), NOW), Err(want));
        }
        assert_eq!(crypto_calls(), before, "a refused token cost a signature check");
        assert!(verify(&mint(&claims(), Some("hs-1")), &keys, &policy(), NOW).is_ok());
        assert_eq!(crypto_calls(), before + 1);
    }

    pub(crate) fn claims() -> Value {
        json!({"sub": "acme", "jti": "key-1", "iss": "https://api.open.cx", "aud": "partner-api",
               "iat": NOW as i64, "exp": NOW as i64 + 3600})
    }

    pub(crate) fn mint(claims: &Value, kid: Option<&str>) -> String {
        let mut h = JHeader::new(Algorithm::HS256);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn raw(header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
        let input = format!("{h}.{p}");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256).unwrap();
        format!("{input}.{sig}")
    }

    fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        c
    }

    #[test]
    fn a_key_that_does_not_fit_its_algorithm_is_refused_when_the_set_is_built() {
        let ed = ed25519_public();
        let rsa = DecodingKey::from_rsa_raw_components(&[0xc5; 256], &[1, 0, 1]);
        assert!(VerifyKey::new("ed", vec![Algorithm::EdDSA], &ed).is_ok());
        assert!(VerifyKey::new("ed-as-es", vec![Algorithm::ES256], &ed).is_err());
        assert!(VerifyKey::new("rsa-as-hs", vec![Algorithm::HS256], &rsa).is_err());
        assert!(VerifyKey::new("rsa-as-es", vec![Algorithm::ES256], &rsa).is_err());
        let err = VerifyKey::new("ed-as-rs", vec![Algorithm::RS256], &ed).unwrap_err();
        assert!(err.contains("ed-as-rs"), "{err}");
    }

    #[test]
    fn an_oversized_or_non_canonical_signature_is_refused_without_arithmetic() {
        let good = mint(&claims(), Some("hs-1"));
        let (signed, _) = good.rsplit_once('.').unwrap();
        let before = crypto_calls();
        for sig in ["A".repeat(1400), "AB".to_string()] {
            let tok = format!("{signed}.{sig}");
            assert_eq!(
                verify(&tok, &hs_keys(), &policy(), NOW).unwrap_err(),
                TokenError::BadSignature
            );
        }
        assert_eq!(crypto_calls(), before);
    }

    #[test]
    fn a_valid_token_verifies() {
        let v = verify(&mint(&claims(), Some("hs-1")), &hs_keys(), &policy(), NOW).unwrap();
        assert_eq!(v.partner, IdClaim::Str("acme".into()));
        assert_eq!(v.key_id.as_deref(), Some("key-1"));
        assert_eq!(v.org, IdClaim::Absent);
    }

    #[test]
    fn key_ids_must_be_clean_and_may_be_required() {
        let keys = hs_keys();
        for bad in ["key\r\nX-Partner-Id: evil", "k\u{0}", &"k".repeat(257)] {
            let tok = mint(&with(|c| drop(c.insert("jti".into(), bad.into()))), Some("hs-1"));
            assert_eq!(
                verify(&tok, &keys, &policy(), NOW),
                Err(TokenError::BadIdentity),
                "{bad:?}"
            );
        }
        let no_jti = mint(&with(|c| drop(c.remove("jti"))), Some("hs-1"));
        assert!(verify(&no_jti, &keys, &policy(), NOW).is_ok_and(|v| v.key_id.is_none()));
        let strict = JwtPolicy {
            require_key_id: true,
            ..policy()
        };
        assert_eq!(verify(&no_jti, &keys, &strict, NOW), Err(TokenError::MissingKeyId));
        assert!(verify(&mint(&claims(), Some("hs-1")), &keys, &strict, NOW).is_ok());
    }

    #[test]
    fn the_only_key_serves_tokens_without_kid() {
        assert!(verify(&mint(&claims(), None), &hs_keys(), &policy(), NOW).is_ok());
        let two = KeySet::new([
            VerifyKey::new("a", vec![Algorithm::HS256], &DecodingKey::from_secret(SECRET)).unwrap(),
            VerifyKey::new("b", vec![Algorithm::HS256], &DecodingKey::from_secret(SECRET)).unwrap(),
        ]);
        assert_eq!(
            verify(&mint(&claims(), None), &two, &policy(), NOW),
            Err(TokenError::UnknownKey)
        );
    }

    /// Tokens refused for their shape or header: before or at the signature.
    #[test]
    fn table_of_rejections_by_shape_and_header() {
        use TokenError::*;
        let good = mint(&claims(), Some("hs-1"));
        let (h, pl, s) = {
            let v: Vec<&str> = good.split('.').collect();
            (v[0].to_string(), v[1].to_string(), v[2].to_string())
        };
        let header = |h: Value| raw(&h, &claims());
        let cases: Vec<(&str, String, TokenError)> = vec![
            ("huge", "a".repeat(MAX_TOKEN_LEN + 1), TooLarge),
            ("two parts", format!("{h}.{pl}"), Malformed),
            ("four parts", format!("{good}.x"), Malformed),
            ("empty sig", format!("{h}.{pl}."), Malformed),
            ("dots", "..".into(), Malformed),
            ("bad chars", format!("{h}.{pl}!.{s}"), Malformed),
            ("padding", format!("{h}.{pl}.{s}="), Malformed),
            ("flipped sig", format!("{h}.{pl}.{}", flip(&s)), BadSignature),
            (
                "header not json",
                format!("{}.{pl}.{s}", URL_SAFE_NO_PAD.encode("nope")),
                BadHeader,
            ),
            (
                "alg none",
                header(json!({"alg": "none", "kid": "hs-1"})),
                AlgorithmNotAllowed,
            ),
            (
                "alg HS384",
                header(json!({"alg": "HS384", "kid": "hs-1"})),
                AlgorithmNotAllowed,
            ),
            (
                "alg RS256 on HS key",
                header(json!({"alg": "RS256", "kid": "hs-1"})),
                AlgorithmMismatch,
            ),
            ("unknown kid", mint(&claims(), Some("nope")), UnknownKey),
            ("empty kid", mint(&claims(), Some("")), UnknownKey),
            ("kid not a string", header(json!({"alg": "HS256", "kid": 5})), BadHeader),
            (
                "crit",
                header(json!({"alg": "HS256", "kid": "hs-1", "crit": ["exp"]})),
                CritHeader,
            ),
            (
                "b64",
                header(json!({"alg": "HS256", "kid": "hs-1", "b64": false})),
                CritHeader,
            ),
        ];
        for (what, token, want) in cases {
            assert_eq!(verify(&token, &hs_keys(), &policy(), NOW), Err(want), "{what}");
        }
    }

    /// Tokens with a good signature refused for their claims.
    #[test]
    fn table_of_rejections_by_claims() {
        use TokenError::*;
        let set = |name: &str, value: Value| mint(&with(|c| drop(c.insert(name.into(), value))), Some("hs-1"));
        let unset = |name: &str| mint(&with(|c| drop(c.remove(name))), Some("hs-1"));
        let cases: Vec<(&str, String, TokenError)> = vec![
            ("expired", set("exp", json!(NOW - 120.0)), Expired),
            ("nbf ahead", set("nbf", json!(NOW + 300.0)), NotYetValid),
            ("iat ahead", set("iat", json!(NOW + 300.0)), IssuedInFuture),
            ("exp string", set("exp", json!("never")), BadClaims),
            ("nbf bool", set("nbf", json!(true)), BadClaims),
            ("wrong iss", set("iss", json!("https://evil")), WrongIssuer),
            ("no iss", unset("iss"), WrongIssuer),
            ("wrong aud", set("aud", json!("other")), WrongAudience),
            ("aud list without ours", set("aud", json!(["other"])), WrongAudience),
            ("no aud", unset("aud"), WrongAudience),
            ("jti not a string", set("jti", json!(7)), BadClaims),
            (
                "claims not an object",
                raw(&json!({"alg": "HS256", "kid": "hs-1"}), &json!([1, 2])),
                BadClaims,
            ),
        ];
        for (what, token, want) in cases {
            assert_eq!(verify(&token, &hs_keys(), &policy(), NOW), Err(want), "{what}");
        }
    }

    #[test]
    fn duplicate_claims_are_refused() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"hs-1"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"sub":"acme","sub":"evil"}"#);
        let input = format!("{h}.{p}");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256).unwrap();
        assert_eq!(
            verify(&format!("{input}.{sig}"), &hs_keys(), &policy(), NOW),
            Err(TokenError::BadClaims)
        );
    }

    #[test]
    fn leeway_applies_both_ways() {
        let k = hs_keys();
        let p = policy();
        let exp10 = mint(
            &with(|c| {
                c.insert("exp".into(), json!(NOW - 10.0));
            }),
            Some("hs-1"),
        );
        assert!(verify(&exp10, &k, &p, NOW).is_ok());
        let nbf10 = mint(
            &with(|c| {
                c.insert("nbf".into(), json!(NOW + 10.0));
            }),
            Some("hs-1"),
        );
        assert!(verify(&nbf10, &k, &p, NOW).is_ok());
        let aud_list = mint(
            &with(|c| {
                c.insert("aud".into(), json!(["x", "partner-api"]));
            }),
            Some("hs-1"),
        );
        assert!(verify(&aud_list, &k, &p, NOW).is_ok());
    }

    #[test]
    fn require_exp() {
        let mut p = policy();
        p.require_exp = true;
        let no_exp = mint(
            &with(|c| {
                c.remove("exp");
            }),
            Some("hs-1"),
        );
        assert_eq!(verify(&no_exp, &hs_keys(), &p, NOW), Err(TokenError::MissingExp));
    }

    fn flip(sig: &str) -> String {
        let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        URL_SAFE_NO_PAD.encode(bytes)
    }
}
