//! What the upstream receives (docs/reference.md#upstream-request): client-sent identity headers, their underscore
//! spellings, method overrides and (from untrusted peers) other client-IP claims removed on
//! every route, then the gateway's own values set. Runs after pingora's hop-by-hop removal,
//! so naming a header in `Connection` cannot make the gateway's own values disappear.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::ip_text::{ip_text, push_ip};
use crate::policy::client_ip::ClientIp;
use crate::policy::pipeline::Identity;

/// `X-Partner-Id` (set for partner principals).
pub(crate) const X_PARTNER_ID: HeaderName = HeaderName::from_static("x-partner-id");
/// `X-Org-Id` (set for org principals).
pub(crate) const X_ORG_ID: HeaderName = HeaderName::from_static("x-org-id");
/// `X-Api-Key-Id` (set when the key has an id).
pub(crate) const X_API_KEY_ID: HeaderName = HeaderName::from_static("x-api-key-id");
/// `X-Real-IP` (the client IP, when known).
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-Id` (both directions).
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) use crate::policy::client_ip::X_FORWARDED_FOR;
/// `X-RateLimit-Limit` (responses).
pub(crate) const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (responses).
pub(crate) const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// `[server] underscore_headers`: what happens to a header with `_` in its name that does
/// not spell one of the gateway's own names (those are always removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnderscoreHeaders {
    /// Remove it (nginx's `underscores_in_headers off`, the default): CGI, WSGI, Rack and PHP
    /// upstreams read `_` as `-`, so the header could shadow a dashed one.
    Drop,
    /// Pass it on.
    Allow,
}

/// How docs/reference.md#upstream-request treats one client-sent header name on its way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Managed {
    /// The gateway sets (or deliberately omits) this header itself: the client's copy goes.
    Owned,
    /// A method override a framework would obey over the real method: always removed.
    MethodOverride,
    /// Another claim about the client's address: kept only from a trusted proxy.
    ClientIpClaim,
    /// `X-Forwarded-For`: rewritten (incoming list + peer), never copied as is.
    ForwardedFor,
}

/// Classifies a lowercase header name with `_` already read as `-`.
fn managed(dashed: &str) -> Option<Managed> {
    match dashed {
        "x-partner-id" | "x-org-id" | "x-api-key-id" | "x-real-ip" | "x-request-id" => Some(Managed::Owned),
        "x-http-method-override" | "x-http-method" | "x-method-override" => Some(Managed::MethodOverride),
        "cf-connecting-ip" | "true-client-ip" | "x-client-ip" | "x-cluster-client-ip" | "forwarded" => {
            Some(Managed::ClientIpClaim)
        }
        "x-forwarded-for" => Some(Managed::ForwardedFor),
        _ if dashed.starts_with("x-authgate-") => Some(Managed::Owned),
        _ => None,
    }
}

/// Whether a client-sent header must be removed before the upstream sees it (docs/reference.md#upstream-request).
/// `name` is lowercase, as `http::HeaderName` keeps it.
pub(crate) fn must_strip(name: &str, peer_trusted: bool, underscores: UnderscoreHeaders) -> bool {
    if name.contains('_') {
        // An underscore spelling of one of our names is always removed; any other name
        // with `_` follows the operator's choice.
        let dashed = name.replace('_', "-");
        return managed(&dashed).is_some() || underscores == UnderscoreHeaders::Drop;
    }
    match managed(name) {
        Some(Managed::Owned | Managed::MethodOverride) => true,
        Some(Managed::ClientIpClaim) => !peer_trusted,
        // Rewritten by the caller from the incoming lines; not removed here.
        Some(Managed::ForwardedFor) | None => false,
    }
}

/// The client-sent headers to remove before forwarding: one pass over the names, so the
/// common case (none present) costs no allocation.
pub(crate) fn to_strip(headers: &HeaderMap, peer_trusted: bool, underscores: UnderscoreHeaders) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for name in headers.keys() {
        if must_strip(name.as_str(), peer_trusted, underscores) {
            out.push(name.clone());
        }
    }
    out
}

/// The new X-Forwarded-For: every incoming line joined with ", ", then the peer.
pub(crate) fn forwarded_for<'a>(incoming: impl Iterator<Item = &'a [u8]>, peer: Option<IpAddr>) -> String {
    let mut out = String::new();
    for line in incoming {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(line);
    }
    if let Some(peer) = peer {
        if !out.is_empty() {
            out.push_str(", ");
        }
        push_ip(&mut out, peer.to_canonical());
    }
    out
}

/// The identity headers to set: (name, value) pairs.
pub(crate) fn identity_headers(identity: &Identity) -> [(HeaderName, Option<&str>); 2] {
    match identity {
        Identity::Anonymous => [(X_PARTNER_ID, None), (X_API_KEY_ID, None)],
        Identity::Partner { id, key_id } => [(X_PARTNER_ID, Some(id)), (X_API_KEY_ID, key_id.as_deref())],
        Identity::Org { id, key_id } => [(X_ORG_ID, Some(id)), (X_API_KEY_ID, key_id.as_deref())],
    }
}

/// X-Real-IP: the client IP when known.
pub(crate) fn real_ip(ip: ClientIp) -> Option<String> {
    ip.addr().map(ip_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xff_lines_are_joined_and_the_peer_appended() {
        let peer = Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            forwarded_for([&b"203.0.113.5"[..]].into_iter(), peer),
            "203.0.113.5, 127.0.0.1"
        );
        assert_eq!(
            forwarded_for([&b"198.51.100.9"[..], &b" 203.0.113.5 "[..]].into_iter(), peer),
            "198.51.100.9, 203.0.113.5, 127.0.0.1"
        );
        assert_eq!(forwarded_for(std::iter::empty(), peer), "127.0.0.1");
        let mapped = Some("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(forwarded_for(std::iter::empty(), mapped), "10.0.0.1");
    }

    #[test]
    fn client_identity_headers_are_found() {
        let mut h = HeaderMap::new();
        h.insert("x-authgate-admin", "1".parse().unwrap());
        h.insert("x-authgate-partner", "p".parse().unwrap());
        h.insert("x-partner-id", "evil".parse().unwrap());
        h.append("x-partner-id", "evil2".parse().unwrap());
        h.insert("x-request-id", "r".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        assert_eq!(to_strip(&h, true, UnderscoreHeaders::Drop).len(), 4);
        assert!(to_strip(&HeaderMap::new(), false, UnderscoreHeaders::Drop).is_empty());
    }

    #[test]
    fn underscore_spellings_of_our_names_always_go() {
        use UnderscoreHeaders::*;
        for name in [
            "x_partner_id",
            "x-partner_id",
            "x_org-id",
            "x_api_key_id",
            "x_real_ip",
            "x_request_id",
            "x_forwarded_for",
            "x-forwarded_for",
            "x_authgate_admin",
            "x_http_method_override",
            "x_method_override",
            "x_http_method",
            "cf_connecting_ip",
            "true_client_ip",
            "x_client_ip",
            "x_cluster_client_ip",
        ] {
            for trusted in [true, false] {
                assert!(must_strip(name, trusted, Allow), "{name} trusted={trusted}");
                assert!(must_strip(name, trusted, Drop), "{name} trusted={trusted}");
            }
        }
        // other underscore names follow the setting
        assert!(must_strip("x_custom", true, Drop));
        assert!(!must_strip("x_custom", true, Allow));
        assert!(!must_strip("x-custom", false, Drop));
    }

    #[test]
    fn method_overrides_always_go_and_ip_claims_only_from_untrusted_peers() {
        for name in ["x-http-method-override", "x-http-method", "x-method-override"] {
            assert!(must_strip(name, true, UnderscoreHeaders::Allow), "{name}");
        }
        for name in [
            "cf-connecting-ip",
            "true-client-ip",
            "x-client-ip",
            "x-cluster-client-ip",
            "forwarded",
        ] {
            assert!(must_strip(name, false, UnderscoreHeaders::Allow), "{name}");
            assert!(!must_strip(name, true, UnderscoreHeaders::Allow), "{name}");
        }
        assert!(!must_strip("x-forwarded-for", false, UnderscoreHeaders::Drop));
        assert!(!must_strip("authorization", false, UnderscoreHeaders::Drop));
    }
}
