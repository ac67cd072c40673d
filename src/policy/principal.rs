//! Who a rate-limit bucket, a revocation or a learned org belongs to: a kind and an id.
//!
//! A partner and an org may carry the same id string; as typed values they never share a
//! bucket (docs/reference.md#pipeline, step 6). The Redis store uses the same pair in its keys.

use std::fmt;
use std::sync::Arc;

/// The two kinds of principal the gateway admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKind {
    /// A partner (`auth = "partner"` routes).
    Partner,
    /// An org (`auth = "org"` and `auth = "api_key"` routes).
    Org,
}

impl PrincipalKind {
    /// Stable text form, used in shared-store keys and state files.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Partner => "partner",
            PrincipalKind::Org => "org",
        }
    }
}

/// A principal: kind plus id. Cheap to clone (the id is shared).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    kind: PrincipalKind,
    id: Arc<str>,
}

impl Principal {
    /// A partner principal.
    pub fn partner(id: impl Into<Arc<str>>) -> Self {
        Principal {
            kind: PrincipalKind::Partner,
            id: id.into(),
        }
    }

    /// An org principal.
    pub fn org(id: impl Into<Arc<str>>) -> Self {
        Principal {
            kind: PrincipalKind::Org,
            id: id.into(),
        }
    }

    /// Which kind of principal this is.
    pub(crate) fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The id as configured or as the token names it.
    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The partner id, when this is a partner (per-partner overrides apply only then).
    pub(crate) fn as_partner(&self) -> Option<&str> {
        (self.kind == PrincipalKind::Partner).then_some(&*self.id)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ids_of_different_kinds_differ() {
        assert_ne!(Principal::partner("x"), Principal::org("x"));
        assert_eq!(Principal::partner("x"), Principal::partner("x"));
        assert_eq!(Principal::org("x").to_string(), "org:x");
        assert_eq!(Principal::partner("x").as_partner(), Some("x"));
        assert_eq!(Principal::org("x").as_partner(), None);
    }
}
