//! Which address the request came from, per `[client_ip]` (docs/reference.md#client_ip).
//!
//! Fails closed: anything that is not a bare address makes the client IP unknown, and an
//! unknown IP matches no allow list.

use std::net::IpAddr;

use http::HeaderName;

use super::ip_set::IpSet;

/// `X-Forwarded-For`, as a prebuilt name: a lookup by `&str` parses the name on every request.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `CF-Connecting-IP` (Cloudflare's client address), prebuilt like [`X_FORWARDED_FOR`].
pub(crate) const CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");

/// The client address a policy decision uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIp {
    /// A parsed address (IPv4-mapped IPv6 already folded to IPv4).
    Known(IpAddr),
    /// The headers named something that is not a bare address.
    Unknown,
}

impl ClientIp {
    /// The address, when known.
    pub(crate) fn addr(self) -> Option<IpAddr> {
        match self {
            ClientIp::Known(ip) => Some(ip),
            ClientIp::Unknown => None,
        }
    }
}

/// Where the client IP comes from (`[client_ip] source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    /// Rightmost untrusted entry of X-Forwarded-For, when the peer is a trusted proxy.
    XForwardedFor,
    /// The CF-Connecting-IP header, when the peer is a trusted proxy.
    CfConnectingIp,
    /// Always the TCP peer.
    Peer,
}

/// `[client_ip]` validated.
#[derive(Debug, Clone)]
pub struct ClientIpPolicy {
    pub source: IpSource,
    pub trusted_proxies: IpSet,
}

/// Determines the client IP from the TCP peer and the raw header values (each
/// X-Forwarded-For line in arrival order, and CF-Connecting-IP when present).
pub fn resolve<'a>(
    policy: &ClientIpPolicy,
    peer: IpAddr,
    xff_lines: impl DoubleEndedIterator<Item = &'a [u8]>,
    cf_connecting_ip: Option<&[u8]>,
) -> ClientIp {
    let peer = peer.to_canonical();
    let trusted_peer = policy.trusted_proxies.contains(peer);
    match policy.source {
        IpSource::Peer => ClientIp::Known(peer),
        IpSource::CfConnectingIp => {
            if !trusted_peer {
                return ClientIp::Known(peer);
            }
            match cf_connecting_ip {
                Some(v) => parse_entry(v).map_or(ClientIp::Unknown, ClientIp::Known),
                None => ClientIp::Known(peer),
            }
        }
        IpSource::XForwardedFor => {
            if !trusted_peer {
                return ClientIp::Known(peer);
            }
            walk_xff(&policy.trusted_proxies, peer, xff_lines)
        }
    }
}

/// Walks all X-Forwarded-For entries right to left (lines joined in order), skipping
/// trusted proxies; the first other entry is the client. All trusted -> the leftmost;
/// none at all -> the peer. Empty list elements are ignored (RFC 9110 §5.6.1).
fn walk_xff<'a>(trusted: &IpSet, peer: IpAddr, lines: impl DoubleEndedIterator<Item = &'a [u8]>) -> ClientIp {
    let mut leftmost: Option<IpAddr> = None;
    for line in lines.rev() {
        for raw in line.rsplit(|&b| b == b',') {
            if trim(raw).is_empty() {
                continue;
            }
            let Some(ip) = parse_entry(raw) else {
                return ClientIp::Unknown;
            };
            if !trusted.contains(ip) {
                return ClientIp::Known(ip);
            }
            leftmost = Some(ip);
        }
    }
    ClientIp::Known(leftmost.unwrap_or(peer))
}

/// One list entry: a bare IPv4 or IPv6 address with optional surrounding whitespace.
/// Ports, brackets, zone ids, names and obfuscated forms are rejected.
fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(trim(raw)).ok()?;
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ip_set::parse_net;

    fn policy(source: IpSource, trusted: &[&str]) -> ClientIpPolicy {
        ClientIpPolicy {
            source,
            trusted_proxies: IpSet::new(trusted.iter().map(|t| parse_net(t).unwrap())),
        }
    }

    fn xff(p: &ClientIpPolicy, peer: &str, lines: &[&str]) -> ClientIp {
        let bytes: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        resolve(p, peer.parse().unwrap(), bytes.iter().copied(), None)
    }

    fn known(s: &str) -> ClientIp {
        ClientIp::Known(s.parse().unwrap())
    }

    #[test]
    fn table_of_xff_cases() {
        let p = policy(IpSource::XForwardedFor, &["127.0.0.0/8", "::1/128"]);
        let cases: &[(&str, &[&str], ClientIp)] = &[
            ("127.0.0.1", &[], known("127.0.0.1")),
            ("127.0.0.1", &["203.0.113.5"], known("203.0.113.5")),
            ("127.0.0.1", &["203.0.113.5, 198.51.100.9"], known("198.51.100.9")),
            ("127.0.0.1", &["198.51.100.9, 203.0.113.5"], known("203.0.113.5")),
            ("127.0.0.1", &["203.0.113.5", "198.51.100.9"], known("198.51.100.9")),
            ("127.0.0.1", &["198.51.100.9", "203.0.113.5"], known("203.0.113.5")),
            (
                "127.0.0.1",
                &["203.0.113.5, 127.0.0.9, 127.0.0.1"],
                known("203.0.113.5"),
            ),
            ("127.0.0.1", &["127.0.0.9, 127.0.0.1"], known("127.0.0.9")),
            ("127.0.0.1", &["garbage"], ClientIp::Unknown),
            ("127.0.0.1", &["203.0.113.5, garbage"], ClientIp::Unknown),
            ("127.0.0.1", &["garbage, 203.0.113.5"], known("203.0.113.5")),
            ("127.0.0.1", &["999.1.1.1"], ClientIp::Unknown),
            ("127.0.0.1", &["203.0.113"], ClientIp::Unknown),
            ("127.0.0.1", &["203.0.113.5 198.51.100.9"], ClientIp::Unknown),
            ("127.0.0.1", &["203.0.113.5:443"], ClientIp::Unknown),
            ("127.0.0.1", &["[2001:db8::1]"], ClientIp::Unknown),
            ("127.0.0.1", &["[2001:db8::1]:443"], ClientIp::Unknown),
            ("127.0.0.1", &["fe80::1%eth0"], ClientIp::Unknown),
            ("127.0.0.1", &["unknown"], ClientIp::Unknown),
            ("127.0.0.1", &["2001:db8::zz"], ClientIp::Unknown),
            ("127.0.0.1", &["0x7f.1"], ClientIp::Unknown),
            ("127.0.0.1", &["2001:DB8::A"], known("2001:db8::a")),
            ("127.0.0.1", &["::ffff:203.0.113.9"], known("203.0.113.9")),
            ("127.0.0.1", &["  203.0.113.5  ,  "], known("203.0.113.5")),
            ("127.0.0.1", &[""], known("127.0.0.1")),
            ("::ffff:127.0.0.1", &["203.0.113.5"], known("203.0.113.5")),
            ("::1", &["203.0.113.5"], known("203.0.113.5")),
            // untrusted peer: XFF ignored entirely, even garbage
            ("192.0.2.1", &["203.0.113.5"], known("192.0.2.1")),
            ("192.0.2.1", &["garbage"], known("192.0.2.1")),
        ];
        for (peer, lines, want) in cases {
            assert_eq!(xff(&p, peer, lines), *want, "peer {peer} xff {lines:?}");
        }
    }

    #[test]
    fn cf_connecting_ip_only_from_trusted_peers() {
        let p = policy(IpSource::CfConnectingIp, &["127.0.0.0/8"]);
        let none = std::iter::empty::<&[u8]>();
        let r =
            |peer: &str, cf: Option<&str>| resolve(&p, peer.parse().unwrap(), none.clone(), cf.map(|c| c.as_bytes()));
        assert_eq!(r("127.0.0.1", Some("203.0.113.5")), known("203.0.113.5"));
        assert_eq!(r("127.0.0.1", Some("bad")), ClientIp::Unknown);
        assert_eq!(r("127.0.0.1", None), known("127.0.0.1"));
        assert_eq!(r("192.0.2.1", Some("203.0.113.5")), known("192.0.2.1"));
    }

    #[test]
    fn peer_mode_ignores_headers() {
        let p = policy(IpSource::Peer, &["127.0.0.0/8"]);
        assert_eq!(xff(&p, "127.0.0.1", &["203.0.113.5"]), known("127.0.0.1"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::policy::ip_set::parse_net;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            "(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}",
            "127\\.0\\.0\\.[0-9]{1,2}",
            "[0-9a-f:]{2,20}",
            "\\[[0-9a-f:]{2,10}\\](:[0-9]{1,5})?",
            "[0-9.]{1,15}:[0-9]{1,5}",
            "[ -~]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The parser answers for any header content, and a known client IP is always the
        /// peer or an entry that is, on its own, a bare address.
        #[test]
        fn never_accepts_a_malformed_entry(lines in proptest::collection::vec(
            proptest::collection::vec(entry(), 0..5).prop_map(|v| v.join(",")), 0..3)) {
            let policy = ClientIpPolicy {
                source: IpSource::XForwardedFor,
                trusted_proxies: IpSet::new([parse_net("127.0.0.0/8").unwrap()]),
            };
            let peer: IpAddr = "127.0.0.1".parse().unwrap();
            let got = resolve(&policy, peer, lines.iter().map(|l| l.as_bytes()), None);
            if let ClientIp::Known(ip) = got {
                let entries: Vec<IpAddr> = lines
                    .iter()
                    .flat_map(|l| l.split(','))
                    .filter_map(|e| e.trim_matches(|c| c == ' ' || c == '\t').parse::<IpAddr>().ok())
                    .map(|ip| ip.to_canonical())
                    .collect();
                prop_assert!(ip == peer || entries.contains(&ip), "{ip} not among {entries:?}");
            }
        }

        /// Raw bytes (not UTF-8, control characters) never panic.
        #[test]
        fn arbitrary_bytes(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let policy = ClientIpPolicy {
                source: IpSource::XForwardedFor,
                trusted_proxies: IpSet::new([parse_net("127.0.0.0/8").unwrap()]),
            };
            let _ = resolve(&policy, "127.0.0.1".parse().unwrap(), [line.as_slice()].into_iter(), None);
        }
    }
}
