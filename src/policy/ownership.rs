//! Org ownership (docs/reference.md#pipeline, step 7) and learning orgs from create responses (docs/reference.md#learned-orgs).

use std::borrow::Cow;
use std::sync::Arc;

use dashmap::DashMap;

use super::denial::Denial;
use super::directory::PartnerPolicy;
use super::path::decode_segment;

/// Orgs partners created through the gateway, shared by all workers and kept across
/// reloads. Looked up by org id in O(1).
#[derive(Debug, Default)]
pub struct LearnedOrgs {
    by_org: DashMap<Box<str>, Vec<Arc<str>>>,
}

impl LearnedOrgs {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `org` belongs to `partner`. Returns false when it already did.
    pub fn learn(&self, partner: &str, org: &str) -> bool {
        let mut owners = self.by_org.entry(org.into()).or_default();
        if owners.iter().any(|p| &**p == partner) {
            return false;
        }
        owners.push(Arc::from(partner));
        true
    }

    /// Whether `partner` learned `org`.
    pub(crate) fn owns(&self, partner: &str, org: &str) -> bool {
        self.by_org
            .get(org)
            .is_some_and(|owners| owners.iter().any(|p| &**p == partner))
    }

    /// Every (partner, org) pair learned (to write back to a shared store).
    pub(crate) fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.by_org.len());
        for e in self.by_org.iter() {
            for p in e.value() {
                out.push((p.to_string(), e.key().to_string()));
            }
        }
        out
    }

    /// Number of learned orgs.
    pub(crate) fn len(&self) -> usize {
        self.by_org.len()
    }
}

/// What a partner's configured orgs say about a capture (step 7, before any learned org).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Configured<'c> {
    /// One of the partner's configured orgs.
    Owned,
    /// Not configured: the learned orgs (local, or shared through Redis) decide.
    Ask(Cow<'c, str>),
    /// Cannot be anyone's org (not UTF-8 once decoded).
    Forbidden,
}

/// Step 7 on a partner route, the configured part: the percent-decoded capture.
pub(crate) fn configured_org<'c>(partner: &PartnerPolicy, raw_capture: &'c [u8]) -> Configured<'c> {
    let decoded = decode_segment(raw_capture);
    let org = match decoded {
        Cow::Borrowed(b) => match std::str::from_utf8(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => return Configured::Forbidden,
        },
        Cow::Owned(v) => match String::from_utf8(v) {
            Ok(s) => Cow::Owned(s),
            Err(_) => return Configured::Forbidden,
        },
    };
    if partner.orgs.contains(&*org) {
        Configured::Owned
    } else {
        Configured::Ask(org)
    }
}

/// Step 7 on a partner route: the percent-decoded capture is one of the partner's orgs,
/// configured or learned by this process.
pub fn check_partner_org(partner: &PartnerPolicy, learned: &LearnedOrgs, raw_capture: &[u8]) -> Result<(), Denial> {
    match configured_org(partner, raw_capture) {
        Configured::Owned => Ok(()),
        Configured::Ask(org) if learned.owns(&partner.id, &org) => Ok(()),
        _ => Err(Denial::OrgForbidden),
    }
}

/// Step 7 on an org or api-key route: the percent-decoded capture is the caller's org.
pub(crate) fn check_own_org(org: &str, raw_capture: &[u8]) -> Result<(), Denial> {
    if *decode_segment(raw_capture) == *org.as_bytes() {
        Ok(())
    } else {
        Err(Denial::OrgForbidden)
    }
}

/// The org id a create response names: a non-empty string at the JSON pointer.
pub(crate) fn org_from_response(body: &[u8], pointer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.pointer(pointer)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::directory::tests::partner;

    #[test]
    fn configured_and_learned_orgs_pass() {
        let mut p = partner("acme");
        p.orgs.insert("o-1".into());
        let learned = LearnedOrgs::new();
        assert!(learned.learn("acme", "o-2"));
        assert!(!learned.learn("acme", "o-2"));
        assert!(learned.learn("other", "o-3"));
        let cases = [
            ("o-1", Ok(())),
            ("%6F-1", Ok(())),
            ("%6f%2D1", Ok(())),
            ("o-2", Ok(())),
            ("o-3", Err(Denial::OrgForbidden)),
            ("o-4", Err(Denial::OrgForbidden)),
            ("%FF", Err(Denial::OrgForbidden)),
        ];
        for (capture, want) in cases {
            assert_eq!(check_partner_org(&p, &learned, capture.as_bytes()), want, "{capture}");
        }
    }

    #[test]
    fn own_org() {
        assert_eq!(check_own_org("abc", b"abc"), Ok(()));
        assert_eq!(check_own_org("abc", b"%61bc"), Ok(()));
        assert_eq!(check_own_org("abc", b"abd"), Err(Denial::OrgForbidden));
    }

    #[test]
    fn learning_needs_a_string_at_the_pointer() {
        assert_eq!(
            org_from_response(br#"{"id":"o-9","name":"x"}"#, "/id").as_deref(),
            Some("o-9")
        );
        assert_eq!(
            org_from_response(br#"{"data":{"id":"o-9"}}"#, "/data/id").as_deref(),
            Some("o-9")
        );
        for body in [
            &br#"{"id":5}"#[..],
            br#"{"id":""}"#,
            br#"{"name":"x"}"#,
            b"not json",
            br#"["o"]"#,
        ] {
            assert_eq!(org_from_response(body, "/id"), None);
        }
    }

    #[test]
    fn many_learned_orgs() {
        let learned = LearnedOrgs::new();
        for i in 0..100_000 {
            learned.learn("p", &format!("org-{i}"));
        }
        assert!(learned.owns("p", "org-99999"));
        assert!(!learned.owns("q", "org-99999"));
        assert_eq!(learned.len(), 100_000);
    }
}
