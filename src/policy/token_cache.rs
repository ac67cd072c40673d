//! A bounded cache of verified tokens, so RS256/ES256/EdDSA cost what HS256 costs on
//! repeat calls.
//!
//! Keyed by the token bytes themselves under quick_cache's keyed hash (ahash with a random
//! per-process key, so nobody can aim collisions at a bucket); a hit compares the whole
//! token, so no digest has to be computed or trusted, and a hit allocates nothing. Each
//! entry remembers the key-set generation it was verified under: after a reload that
//! rotates keys the entry no longer counts and the token is verified again. Only tokens
//! that passed every check are inserted; `exp`/`nbf`/`iat` are re-checked on every hit.
//! Revocation, partner status and IP are not cached here: they run on every request.
//!
//! Memory is bounded by weight (the token's length plus the entry), not by count, so
//! large tokens cannot make the cache grow past [`DEFAULT_WEIGHT`].

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::jwt::{self, JwtPolicy, KeySet, TokenError, VerifiedToken};

/// Default number of cached tokens the cache is sized for.
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;
/// Default memory bound: 64 MiB of tokens and entries.
pub(crate) const DEFAULT_WEIGHT: u64 = 64 << 20;

/// Bytes an entry costs besides the token text (the verdict, the Arcs, the map slot).
const ENTRY_OVERHEAD: u64 = 160;

/// One verified token.
#[derive(Debug)]
struct Entry {
    generation: u64,
    verified: Arc<VerifiedToken>,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<Box<str>, Arc<Entry>> for ByLength {
    fn weight(&self, key: &Box<str>, _: &Arc<Entry>) -> u64 {
        key.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Verified-token cache shared by all worker threads (sharded internally).
pub struct TokenCache {
    cache: Cache<Box<str>, Arc<Entry>, ByLength>,
}

impl TokenCache {
    /// A cache for about `capacity` tokens of typical size, within [`DEFAULT_WEIGHT`].
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(16);
        TokenCache {
            cache: Cache::with_weighter(capacity, DEFAULT_WEIGHT, ByLength),
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
        if let Some(hit) = self.cache.get(token) {
            if hit.generation == keys.generation() {
                hit.verified.check_times(policy, now)?;
                return Ok(hit.verified.clone());
            }
        }
        let verified = Arc::new(jwt::verify(token, keys, policy, now)?);
        self.cache.insert(
            token.into(),
            Arc::new(Entry {
                generation: keys.generation(),
                verified: verified.clone(),
            }),
        );
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
    fn memory_is_bounded_by_weight_not_count() {
        let cache = TokenCache::new(100);
        let keys = hs_keys();
        let mut big = claims();
        big["pad"] = "x".repeat(5000).into();
        let mut len = 0;
        for i in 0..20_000 {
            big["jti"] = format!("k-{i:05}").into();
            let tok = mint(&big, Some("hs-1"));
            len = tok.len() as u64;
            cache.verify(&tok, &keys, &policy(), NOW).unwrap();
        }
        let fits = DEFAULT_WEIGHT / (len + ENTRY_OVERHEAD);
        assert!(
            (cache.len() as u64) <= fits + fits / 20,
            "{} entries of {len} bytes; {fits} fit",
            cache.len()
        );
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
