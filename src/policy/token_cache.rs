//! A bounded cache of verified tokens, so RS256/ES256/EdDSA cost what HS256 costs on
//! repeat calls.
//!
//! Keyed by SHA-256 of (key-set generation, token): 32 bytes per entry whatever the token
//! size, and a key rotation makes every old entry unreachable. Only tokens that passed
//! every check are inserted; `exp`/`nbf`/`iat` are re-checked on every hit. Revocation,
//! partner status and IP are not cached here: they run on every request.

use std::sync::Arc;

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::jwt::{self, JwtPolicy, KeySet, TokenError, VerifiedToken};

/// Default number of cached tokens.
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// Verified-token cache shared by all worker threads (sharded internally).
pub struct TokenCache {
    cache: Cache<[u8; 32], Arc<VerifiedToken>>,
}

impl TokenCache {
    /// A cache holding at most about `capacity` tokens (approximate LRU).
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            cache: Cache::new(capacity.max(16)),
        }
    }

    /// Verifies `token`, answering from the cache when this key set already verified it.
    pub fn verify(
        &self,
        token: &str,
        keys: &KeySet,
        policy: &JwtPolicy,
        now: f64,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        if token.len() > jwt::MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let key = cache_key(keys.generation(), token);
        if let Some(hit) = self.cache.get(&key) {
            hit.check_times(policy, now)?;
            return Ok(hit);
        }
        let verified = Arc::new(jwt::verify(token, keys, policy, now)?);
        self.cache.insert(key, verified.clone());
        Ok(verified)
    }

    /// Number of cached tokens.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the cache is empty.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

fn cache_key(generation: u64, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    h.update(token.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::jwt::tests::{claims, hs_keys, mint, policy};
    use crate::policy::jwt::IdClaim;

    const NOW: f64 = 1_800_000_000.0;

    #[test]
    fn repeat_calls_hit_and_still_check_expiry() {
        let cache = TokenCache::new(100);
        let keys = hs_keys();
        let tok = mint(&claims(), Some("hs-1"));
        let a = cache.verify(&tok, &keys, &policy(), NOW).unwrap();
        assert_eq!(cache.len(), 1);
        let b = cache.verify(&tok, &keys, &policy(), NOW).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.partner, IdClaim::Str("acme".into()));
        // an hour and a minute later the cached token has expired
        assert_eq!(
            cache.verify(&tok, &keys, &policy(), NOW + 3700.0),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn invalid_tokens_are_never_cached() {
        let cache = TokenCache::new(100);
        let keys = hs_keys();
        let tok = mint(&claims(), Some("nope"));
        assert!(cache.verify(&tok, &keys, &policy(), NOW).is_err());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_new_key_set_re_verifies() {
        let cache = TokenCache::new(100);
        let tok = mint(&claims(), Some("hs-1"));
        assert!(cache.verify(&tok, &hs_keys(), &policy(), NOW).is_ok());
        let rotated = KeySet::new([]);
        assert_eq!(
            cache.verify(&tok, &rotated, &policy(), NOW),
            Err(TokenError::UnknownKey)
        );
    }
}
