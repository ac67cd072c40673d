//! A set of CIDR prefixes with lookups that cost one hash probe per distinct prefix length,
//! so a 1k-entry allow list is as cheap as a 1-entry one.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// Parsed CIDRs (a bare address is a /32 or /128). IPv4-mapped IPv6 entries and lookups are
/// compared as IPv4, so `::ffff:203.0.113.9` matches `203.0.113.0/24`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
    len: usize,
}

impl IpSet {
    /// Builds the set; entries are normalised to their network address.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut set = IpSet::default();
        for net in nets {
            set.insert(net);
        }
        set
    }

    fn insert(&mut self, net: IpNet) {
        self.len += 1;
        match canonical_net(net) {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let key = mask4(u32::from(n.network()), len);
                insert_len(&mut self.v4, len, key);
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let key = mask6(u128::from(n.network()), len);
                insert_len(&mut self.v6, len, key);
            }
        }
    }

    /// Whether `ip` lies in one of the prefixes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4.iter().any(|(len, keys)| keys.contains(&mask4(bits, *len)))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6.iter().any(|(len, keys)| keys.contains(&mask6(bits, *len)))
            }
        }
    }

    /// Number of entries as configured.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry was configured.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Parses one allow-list entry: a CIDR, or a bare address meaning /32 or /128.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net);
    }
    match t.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(format!("{text:?} is not an IP address or CIDR")),
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    // ::ffff:a.b.c.d/n with n >= 96 is the IPv4 prefix a.b.c.d/(n-96).
    if let IpNet::V6(n) = net {
        if let Some(v4) = n.network().to_ipv4_mapped() {
            if n.prefix_len() >= 96 {
                if let Ok(v4net) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

fn insert_len<T: std::hash::Hash + Eq>(table: &mut Vec<(u8, HashSet<T>)>, len: u8, key: T) {
    match table.iter_mut().find(|(l, _)| *l == len) {
        Some((_, keys)) => {
            keys.insert(key);
        }
        None => {
            table.push((len, HashSet::from([key])));
            // Longer prefixes first: the common "one host" entries answer soonest.
            table.sort_by_key(|e| std::cmp::Reverse(e.0));
        }
    }
}

fn mask4(bits: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> IpSet {
        IpSet::new(entries.iter().map(|e| parse_net(e).unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_cidrs_and_bare_addresses() {
        let s = set(&["203.0.113.0/24", "2001:db8::/48", "198.51.100.7"]);
        for yes in [
            "203.0.113.5",
            "203.0.113.255",
            "198.51.100.7",
            "2001:db8::5",
            "2001:DB8:0:ffff::1",
        ] {
            assert!(s.contains(ip(yes)), "{yes}");
        }
        for no in [
            "198.51.100.8",
            "203.0.114.1",
            "2001:db8:1::1",
            "2001:db9::1",
            "fe80::1",
            "10.0.0.1",
        ] {
            assert!(!s.contains(ip(no)), "{no}");
        }
    }

    #[test]
    fn ipv4_mapped_compares_as_ipv4() {
        let s = set(&["203.0.113.0/24", "::ffff:198.51.100.0/120"]);
        assert!(s.contains(ip("::ffff:203.0.113.9")));
        assert!(s.contains(ip("198.51.100.1")));
        assert!(!s.contains(ip("::ffff:192.0.2.1")));
        assert!(!s.contains(ip("::1:203.0.113.9")));
    }

    #[test]
    fn zero_prefix_matches_its_family_only() {
        let s = set(&["0.0.0.0/0"]);
        assert!(s.contains(ip("8.8.8.8")));
        assert!(!s.contains(ip("2001:db8::1")));
    }

    #[test]
    fn host_bits_in_a_cidr_are_ignored() {
        let s = set(&["203.0.113.77/24"]);
        assert!(s.contains(ip("203.0.113.1")));
    }

    #[test]
    fn bad_entries_are_rejected() {
        for bad in ["203.0.113.0/33", "not-a-cidr", "", "1.2.3", "2001:db8::/129", "[::1]"] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn large_sets_work() {
        let nets: Vec<String> = (0..1000).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
        let s = IpSet::new(nets.iter().map(|n| parse_net(n).unwrap()));
        assert_eq!(s.len(), 1000);
        assert!(s.contains(ip("10.3.231.9")));
        assert!(!s.contains(ip("10.4.0.1")));
    }
}
