//! What the upstream receives (CONTRACT §6): client-sent identity headers removed on every
//! route, then the gateway's own values set.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::policy::client_ip::ClientIp;
use crate::policy::pipeline::Identity;

/// `X-Partner-Id` (set for partner principals).
pub const X_PARTNER_ID: HeaderName = HeaderName::from_static("x-partner-id");
/// `X-Org-Id` (set for org principals).
pub const X_ORG_ID: HeaderName = HeaderName::from_static("x-org-id");
/// `X-Api-Key-Id` (set when the key has an id).
pub const X_API_KEY_ID: HeaderName = HeaderName::from_static("x-api-key-id");
/// `X-Real-IP` (the client IP, when known).
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Request-Id` (both directions).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-RateLimit-Limit` (responses).
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (responses).
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// Headers a client must never be able to set for the upstream (plus any `x-authgate-*`).
pub const STRIPPED: [HeaderName; 5] = [X_PARTNER_ID, X_ORG_ID, X_API_KEY_ID, X_REAL_IP, X_REQUEST_ID];

/// The client-sent headers to remove before forwarding: one pass over the names, so the
/// common case (none present) costs no lookups and no allocation.
pub fn to_strip(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-authgate-") || STRIPPED.iter().any(|s| s.as_str() == n) {
            out.push(name.clone());
        }
    }
    out
}

/// The new X-Forwarded-For: every incoming line joined with ", ", then the peer.
pub fn forwarded_for<'a>(incoming: impl Iterator<Item = &'a [u8]>, peer: Option<IpAddr>) -> String {
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

/// Appends an address in its standard text form. IPv4 by hand: `Display` for `IpAddr`
/// goes through the padding-aware formatter and cost more than the whole route match.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => out.push_str(&v6.to_string()),
    }
}

/// An address as text (see [`push_ip`]).
pub fn ip_text(ip: IpAddr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, ip);
    s
}

/// The identity headers to set: (name, value) pairs.
pub fn identity_headers(identity: &Identity) -> [(HeaderName, Option<&str>); 2] {
    match identity {
        Identity::Anonymous => [(X_PARTNER_ID, None), (X_API_KEY_ID, None)],
        Identity::Partner { id, key_id } => [(X_PARTNER_ID, Some(id)), (X_API_KEY_ID, key_id.as_deref())],
        Identity::Org { id, key_id } => [(X_ORG_ID, Some(id)), (X_API_KEY_ID, key_id.as_deref())],
    }
}

/// X-Real-IP: the client IP when known.
pub fn real_ip(ip: ClientIp) -> Option<String> {
    ip.addr().map(ip_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.100",
            "255.255.255.255",
            "203.0.113.9",
            "2001:db8::1",
            "::1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed), parsed.to_string());
        }
    }

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
        assert_eq!(to_strip(&h).len(), 4);
        assert!(to_strip(&HeaderMap::new()).is_empty());
    }
}
