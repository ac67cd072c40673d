//! What the upstream receives (CONTRACT §6): client-sent identity headers removed on every
//! route, then the gateway's own values set.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::HeaderMap;

use crate::policy::client_ip::ClientIp;
use crate::policy::pipeline::Identity;

/// Headers a client must never be able to set for the upstream.
pub const STRIPPED: [&str; 5] = ["x-partner-id", "x-org-id", "x-api-key-id", "x-real-ip", "x-request-id"];

/// Header names that start with `x-authgate-` (removed too).
pub fn authgate_headers(headers: &HeaderMap) -> Vec<http::HeaderName> {
    headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-authgate-"))
        .cloned()
        .collect()
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
        let _ = write!(out, "{}", peer.to_canonical());
    }
    out
}

/// The identity headers to set: (name, value) pairs.
pub fn identity_headers(identity: &Identity) -> [(&'static str, Option<&str>); 2] {
    match identity {
        Identity::Anonymous => [("x-partner-id", None), ("x-api-key-id", None)],
        Identity::Partner { id, key_id } => [("x-partner-id", Some(id)), ("x-api-key-id", key_id.as_deref())],
        Identity::Org { id, key_id } => [("x-org-id", Some(id)), ("x-api-key-id", key_id.as_deref())],
    }
}

/// X-Real-IP: the client IP when known.
pub fn real_ip(ip: ClientIp) -> Option<String> {
    ip.addr().map(|a| a.to_string())
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
    fn authgate_prefixed_headers_are_found() {
        let mut h = HeaderMap::new();
        h.insert("x-authgate-admin", "1".parse().unwrap());
        h.insert("x-authgate-partner", "p".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        assert_eq!(authgate_headers(&h).len(), 2);
    }
}
