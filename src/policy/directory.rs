//! Who may call: partners, orgs and static API keys from the policy file, and the checks
//! of docs/reference.md#pipeline steps 3-5 (known, not revoked, IP allowed, active) in that order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::client_ip::ClientIp;
use super::denial::Denial;
use super::ip_set::IpSet;

/// Per-partner override of a named limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOverride {
    /// Index into the limit table.
    pub limit: usize,
    pub per_minute: u32,
}

/// One `[[partner]]`.
#[derive(Debug, Clone)]
pub struct PartnerPolicy {
    pub id: Arc<str>,
    pub active: bool,
    /// `None` (absent or empty) = any IP.
    pub ip_allow_list: Option<IpSet>,
    pub revoked_keys: HashSet<Box<str>>,
    /// Configured orgs (learned ones live in [`super::learned::LearnedOrgs`]).
    pub orgs: HashSet<Box<str>>,
    pub limit_overrides: Vec<LimitOverride>,
}

/// One `[[org]]`.
#[derive(Debug, Clone)]
pub struct OrgPolicy {
    pub(crate) id: Arc<str>,
    pub(crate) active: bool,
    pub(crate) ip_allow_list: Option<IpSet>,
    pub(crate) revoked_keys: HashSet<Box<str>>,
}

/// One `[[api_key]]` (the key itself is never stored, only its digest).
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    pub(crate) id: Arc<str>,
    pub(crate) org: Arc<str>,
    pub(crate) disabled: bool,
    pub(crate) digest: [u8; 32],
}

/// The policy file, validated and indexed for O(1) lookups.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    partners: HashMap<Arc<str>, PartnerPolicy>,
    orgs: HashMap<Arc<str>, OrgPolicy>,
    /// Keyed by the first 8 bytes of the digest; the full digest is compared in constant time.
    api_keys: HashMap<u64, Vec<ApiKeyEntry>>,
}

impl Directory {
    /// Indexes validated entries.
    pub fn new(partners: Vec<PartnerPolicy>, orgs: Vec<OrgPolicy>, api_keys: Vec<ApiKeyEntry>) -> Self {
        let mut index: HashMap<u64, Vec<ApiKeyEntry>> = HashMap::new();
        for key in api_keys {
            index.entry(prefix(&key.digest)).or_default().push(key);
        }
        Directory {
            partners: partners.into_iter().map(|p| (p.id.clone(), p)).collect(),
            orgs: orgs.into_iter().map(|o| (o.id.clone(), o)).collect(),
            api_keys: index,
        }
    }

    /// A partner by id.
    pub fn partner(&self, id: &str) -> Option<&PartnerPolicy> {
        self.partners.get(id)
    }

    /// An org by id.
    pub fn org(&self, id: &str) -> Option<&OrgPolicy> {
        self.orgs.get(id)
    }

    /// Whether the file names `id` as an org anywhere: an `[[org]]` entry, a partner's
    /// `orgs`, or an `[[api_key]]`'s `org` (`authgate revoke --org` refuses a typo).
    pub(crate) fn lists_org(&self, id: &str) -> bool {
        self.orgs.contains_key(id)
            || self.partners.values().any(|p| p.orgs.contains(id))
            || self.api_keys.values().flatten().any(|k| &*k.org == id)
    }

    /// Number of partners (the `authgate_partners` gauge).
    pub fn partner_count(&self) -> usize {
        self.partners.len()
    }

    /// All partners.
    pub(crate) fn partners(&self) -> impl Iterator<Item = &PartnerPolicy> {
        self.partners.values()
    }

    /// The entry whose digest equals SHA-256(`key`), compared in constant time.
    pub(crate) fn api_key(&self, key: &[u8]) -> Option<&ApiKeyEntry> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.api_keys
            .get(&prefix(&digest))?
            .iter()
            .find(|e| bool::from(e.digest.ct_eq(&digest)))
    }
}

fn prefix(d: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

fn ip_allowed(list: &Option<IpSet>, ip: ClientIp) -> bool {
    match list {
        None => true,
        Some(set) => ip.addr().is_some_and(|a| set.contains(a)),
    }
}

/// Steps 3 (revoked), 4 (IP) and 5 (active) for any principal, in that order.
fn admit_principal(
    revoked_keys: &HashSet<Box<str>>,
    shared_revoked: bool,
    ip_allow_list: &Option<IpSet>,
    active: bool,
    key_id: Option<&str>,
    ip: ClientIp,
) -> Result<(), Denial> {
    if shared_revoked || key_id.is_some_and(|k| revoked_keys.contains(k)) {
        return Err(Denial::RevokedKey);
    }
    if !ip_allowed(ip_allow_list, ip) {
        return Err(Denial::IpDenied);
    }
    if !active {
        return Err(Denial::InactivePartner);
    }
    Ok(())
}

/// Steps 3-5 for a partner token: known, key not revoked, IP allowed, active.
/// `shared_revoked`: the key is revoked through `authgate revoke` (docs/reference.md#commands).
pub(crate) fn admit_partner<'d>(
    dir: &'d Directory,
    partner: &str,
    key_id: Option<&str>,
    shared_revoked: bool,
    ip: ClientIp,
) -> Result<&'d PartnerPolicy, Denial> {
    let p = dir.partner(partner).ok_or(Denial::UnknownPartner)?;
    admit_principal(&p.revoked_keys, shared_revoked, &p.ip_allow_list, p.active, key_id, ip)?;
    Ok(p)
}

/// Steps 3-5 for an org principal (org JWT or static key). An org the file does not list
/// passes unless `must_be_listed` (a shared revocation still refuses its key).
pub(crate) fn admit_org<'d>(
    dir: &'d Directory,
    org: &str,
    key_id: Option<&str>,
    shared_revoked: bool,
    ip: ClientIp,
    must_be_listed: bool,
) -> Result<Option<&'d OrgPolicy>, Denial> {
    let Some(o) = dir.org(org) else {
        return if must_be_listed {
            Err(Denial::UnknownPartner)
        } else if shared_revoked {
            Err(Denial::RevokedKey)
        } else {
            Ok(None)
        };
    };
    admit_principal(&o.revoked_keys, shared_revoked, &o.ip_allow_list, o.active, key_id, ip)?;
    Ok(Some(o))
}

/// The static-key format: `prefix` + 16-128 of `[A-Za-z0-9_-]`.
pub(crate) fn api_key_well_formed(key: &[u8], prefix: &str) -> bool {
    match key.strip_prefix(prefix.as_bytes()) {
        Some(rest) => {
            (16..=128).contains(&rest.len())
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        }
        None => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::ip_set::parse_net;

    pub(crate) fn partner(id: &str) -> PartnerPolicy {
        PartnerPolicy {
            id: id.into(),
            active: true,
            ip_allow_list: None,
            revoked_keys: HashSet::new(),
            orgs: HashSet::new(),
            limit_overrides: vec![],
        }
    }

    fn ip(s: &str) -> ClientIp {
        ClientIp::Known(s.parse().unwrap())
    }

    fn dir() -> Directory {
        let mut acl = partner("acl");
        acl.ip_allow_list = Some(IpSet::new([parse_net("203.0.113.0/24").unwrap()]));
        let mut off = partner("off");
        off.active = false;
        off.ip_allow_list = acl.ip_allow_list.clone();
        let mut rev = partner("rev");
        rev.revoked_keys.insert("leaked".into());
        rev.ip_allow_list = acl.ip_allow_list.clone();
        let org = OrgPolicy {
            id: "o1".into(),
            active: true,
            ip_allow_list: None,
            revoked_keys: HashSet::from(["old".into()]),
        };
        let dead = OrgPolicy {
            id: "o2".into(),
            active: false,
            ip_allow_list: None,
            revoked_keys: HashSet::new(),
        };
        let key = ApiKeyEntry {
            id: "ak-1".into(),
            org: "o1".into(),
            disabled: false,
            digest: Sha256::digest(b"org_aaaaaaaaaaaaaaaaaaaa").into(),
        };
        Directory::new(vec![partner("acme"), acl, off, rev], vec![org, dead], vec![key])
    }

    #[test]
    fn partner_checks_in_contract_order() {
        let d = dir();
        let good = ip("203.0.113.9");
        let bad = ip("198.51.100.1");
        type Case<'a> = (&'a str, Option<&'a str>, ClientIp, Result<(), Denial>);
        let cases: Vec<Case<'_>> = vec![
            ("acme", None, bad, Ok(())),
            ("acme", Some("k"), ClientIp::Unknown, Ok(())),
            ("ghost", None, bad, Err(Denial::UnknownPartner)),
            ("acl", None, good, Ok(())),
            ("acl", None, bad, Err(Denial::IpDenied)),
            ("acl", None, ClientIp::Unknown, Err(Denial::IpDenied)),
            ("off", None, bad, Err(Denial::IpDenied)),
            ("off", None, good, Err(Denial::InactivePartner)),
            ("rev", Some("leaked"), bad, Err(Denial::RevokedKey)),
            ("rev", Some("fresh"), good, Ok(())),
        ];
        for (who, key, ip, want) in cases {
            assert_eq!(
                admit_partner(&d, who, key, false, ip).map(|_| ()),
                want,
                "{who} {key:?} {ip:?}"
            );
        }
    }

    #[test]
    fn org_checks() {
        let d = dir();
        let any = ip("192.0.2.1");
        assert!(admit_org(&d, "o1", Some("k"), false, any, false).unwrap().is_some());
        assert_eq!(
            admit_org(&d, "o1", Some("old"), false, any, false).unwrap_err(),
            Denial::RevokedKey
        );
        assert_eq!(
            admit_org(&d, "o2", None, false, any, false).unwrap_err(),
            Denial::InactivePartner
        );
        assert!(admit_org(&d, "o9", None, false, any, false).unwrap().is_none());
        assert_eq!(
            admit_org(&d, "o9", None, false, any, true).unwrap_err(),
            Denial::UnknownPartner
        );
    }

    #[test]
    fn api_keys_by_digest() {
        let d = dir();
        assert_eq!(d.api_key(b"org_aaaaaaaaaaaaaaaaaaaa").map(|k| &*k.id), Some("ak-1"));
        assert!(d.api_key(b"org_aaaaaaaaaaaaaaaaaaab").is_none());
    }

    #[test]
    fn api_key_format() {
        assert!(api_key_well_formed(b"org_abcdefghijklmnop", "org_"));
        assert!(api_key_well_formed(
            format!("org_{}", "a".repeat(128)).as_bytes(),
            "org_"
        ));
        for bad in [
            "org_short",
            "apps_abcdefghijklmnopqrst",
            "org_abcdefghijklmnopqrs!",
            "",
            "org_",
        ] {
            assert!(!api_key_well_formed(bad.as_bytes(), "org_"), "{bad}");
        }
        assert!(!api_key_well_formed(
            format!("org_{}", "a".repeat(129)).as_bytes(),
            "org_"
        ));
    }
}
