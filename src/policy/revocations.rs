//! Key ids revoked at runtime (`authgate revoke`, docs/reference.md#commands), next to the policy file's
//! `revoked_keys`: step 3 refuses a key found in either. One immutable value, replaced as a
//! whole when a revocation arrives, so a request sees one consistent set.

use std::collections::{HashMap, HashSet};

use super::principal::{Principal, PrincipalKind};

/// The shared revocations in force: per principal id and kind, the revoked key ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// principal id -> [partner's revoked keys, org's revoked keys]
    by_id: HashMap<Box<str>, [HashSet<Box<str>>; 2]>,
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
        !self.by_id.is_empty() && self.by_id.get(id).is_some_and(|s| s[slot(kind)].contains(key_id))
    }

    /// A copy with `key_id` of `principal` revoked (`revoked = true`) or taken back.
    pub fn with(&self, principal: &Principal, key_id: &str, revoked: bool) -> Revocations {
        let mut next = self.clone();
        let i = slot(principal.kind());
        if revoked {
            next.by_id.entry((**principal.id()).into()).or_default()[i].insert(key_id.into());
        } else if let Some(sets) = next.by_id.get_mut(&**principal.id()) {
            sets[i].remove(key_id);
            if sets.iter().all(HashSet::is_empty) {
                next.by_id.remove(&**principal.id());
            }
        }
        next
    }

    /// Number of revoked keys.
    pub fn len(&self) -> usize {
        self.by_id.values().flat_map(|s| s.iter()).map(HashSet::len).sum()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
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
}
