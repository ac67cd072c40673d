//! Key ids revoked at runtime (`authgate revoke`, docs/reference.md#commands), next to the policy file's
//! `revoked_keys`: step 3 refuses a key found in either.
//!
//! One set, changed in place: a record arriving costs one hash insert or removal under a
//! short write lock (O(1) amortized), never a copy of the whole set, so a replica applies
//! 2,000 records in a burst, or reads 100,000 at start, without slowing down as the set
//! grows. A request reads it under the read lock for one lookup; while nothing is revoked it
//! takes no lock at all.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use super::principal::{Principal, PrincipalKind};

/// principal id -> [partner's revoked keys, org's revoked keys]
type ById = HashMap<Box<str>, [HashSet<Box<str>>; 2]>;

/// The shared revocations in force: per principal id and kind, the revoked key ids.
#[derive(Debug, Default)]
pub struct Revocations {
    by_id: RwLock<ById>,
    /// Revoked keys in `by_id` (read without the lock: the empty set's fast path).
    count: AtomicUsize,
}

fn slot(kind: PrincipalKind) -> usize {
    match kind {
        PrincipalKind::Partner => 0,
        PrincipalKind::Org => 1,
    }
}

impl Revocations {
    /// Whether key `key_id` of the principal (`kind`, `id`) is revoked. Allocates nothing.
    pub fn contains(&self, kind: PrincipalKind, id: &str, key_id: &str) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let by_id = self.by_id.read().unwrap_or_else(|e| e.into_inner());
        by_id.get(id).is_some_and(|s| s[slot(kind)].contains(key_id))
    }

    /// Revokes `key_id` of `principal` (`revoked = true`) or takes the revocation back.
    pub fn set(&self, principal: &Principal, key_id: &str, revoked: bool) {
        let mut by_id = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        let i = slot(principal.kind());
        let changed = if revoked {
            by_id.entry((**principal.id()).into()).or_default()[i].insert(key_id.into())
        } else if let Some(sets) = by_id.get_mut(&**principal.id()) {
            let removed = sets[i].remove(key_id);
            if sets.iter().all(HashSet::is_empty) {
                by_id.remove(&**principal.id());
            }
            removed
        } else {
            false
        };
        if changed && revoked {
            self.count.fetch_add(1, Ordering::AcqRel);
        } else if changed {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// This set with `key_id` of `principal` revoked or taken back (for building one in tests
    /// and benches).
    pub fn with(self, principal: &Principal, key_id: &str, revoked: bool) -> Revocations {
        self.set(principal, key_id, revoked);
        self
    }

    /// Number of revoked keys.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_and_take_back() {
        let r = Revocations::default();
        let p = Principal::partner("acme");
        assert!(!r.contains(PrincipalKind::Partner, "acme", "k1"));
        let r = r.with(&p, "k1", true);
        assert!(r.contains(PrincipalKind::Partner, "acme", "k1"));
        assert!(!r.contains(PrincipalKind::Org, "acme", "k1"), "kinds are apart");
        assert!(!r.contains(PrincipalKind::Partner, "acme", "k2"));
        assert_eq!(r.len(), 1);
        let r = r.with(&Principal::org("acme"), "k1", true);
        assert_eq!(r.len(), 2);
        let r = r.with(&p, "k1", false).with(&Principal::org("acme"), "k1", false);
        assert!(!r.contains(PrincipalKind::Partner, "acme", "k1"));
        assert!(r.is_empty());
    }

    #[test]
    fn repeated_and_unknown_changes_keep_the_count_exact() {
        let r = Revocations::default();
        let p = Principal::partner("acme");
        r.set(&p, "k1", true);
        r.set(&p, "k1", true);
        assert_eq!(r.len(), 1, "a second revocation of one key counts once");
        r.set(&p, "other", false);
        r.set(&Principal::partner("nobody"), "k1", false);
        assert_eq!(r.len(), 1, "taking back what was never revoked changes nothing");
        r.set(&p, "k1", false);
        r.set(&p, "k1", false);
        assert!(r.is_empty());
        assert!(!r.contains(PrincipalKind::Partner, "acme", "k1"));
    }

    #[test]
    fn a_hundred_thousand_keys_apply_one_by_one() {
        // O(1) per record: a set rebuilt per record would take minutes here
        let r = Revocations::default();
        for i in 0..100_000 {
            r.set(
                &Principal::partner(format!("p{}", i % 100).as_str()),
                &format!("k{i}"),
                true,
            );
        }
        assert_eq!(r.len(), 100_000);
        assert!(r.contains(PrincipalKind::Partner, "p7", "k99907"));
        assert!(!r.contains(PrincipalKind::Partner, "p8", "k99907"));
    }
}
