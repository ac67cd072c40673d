//! A set of CIDR prefixes with lookups that cost one search per distinct prefix length, so
//! a 1k-entry allow list is about as cheap as a 1-entry one. The networks of one length are
//! a sorted list while there are few of them (a binary search over a handful of integers
//! costs less than SipHash of the address, on the short lists most configs hold, such as
//! the trusted proxies) and a hash set beyond that.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;

/// Parsed CIDRs (a bare address is a /32 or /128). IPv4-mapped IPv6 entries and lookups are
/// compared as IPv4, so `::ffff:203.0.113.9` matches `203.0.113.0/24`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u8, Keys<u32>)>,
    v6: Vec<(u8, Keys<u128>)>,
    len: usize,
}

/// Up to this many networks of one prefix length are searched as a sorted list.
const FEW: usize = 32;

/// The masked network addresses of one prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys<T: Hash + Eq> {
    /// Sorted, without duplicates: a binary search of about five steps at most.
    Few(Vec<T>),
    /// One hash probe, for lists past [`FEW`], where the search would take longer.
    Many(HashSet<T>),
}

impl<T: Ord + Hash> Keys<T> {
    fn new(mut keys: Vec<T>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        if keys.len() <= FEW {
            Keys::Few(keys)
        } else {
            Keys::Many(keys.into_iter().collect())
        }
    }

    fn contains(&self, key: &T) -> bool {
        match self {
            Keys::Few(keys) => keys.binary_search(key).is_ok(),
            Keys::Many(keys) => keys.contains(key),
        }
    }
}

impl IpSet {
    /// Builds the set; entries are normalised to their network address.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let (mut v4, mut v6, mut len) = (Vec::new(), Vec::new(), 0);
        for net in nets {
            len += 1;
            match canonical_net(net) {
                IpNet::V4(n) => {
                    let l = n.prefix_len();
                    insert_len(&mut v4, l, mask4(u32::from(n.network()), l));
                }
                IpNet::V6(n) => {
                    let l = n.prefix_len();
                    insert_len(&mut v6, l, mask6(u128::from(n.network()), l));
                }
            }
        }
        IpSet {
            v4: v4.into_iter().map(|(l, keys)| (l, Keys::new(keys))).collect(),
            v6: v6.into_iter().map(|(l, keys)| (l, Keys::new(keys))).collect(),
            len,
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

/// Adds `key` to the keys of prefix length `len` (unsorted; [`Keys::new`] sorts them).
fn insert_len<T>(table: &mut Vec<(u8, Vec<T>)>, len: u8, key: T) {
    match table.iter_mut().find(|(l, _)| *l == len) {
        Some((_, keys)) => keys.push(key),
        None => {
            table.push((len, vec![key]));
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

    use proptest::prelude::*;

    proptest! {
        /// Fault model: the sorted-list search or the hash set gives a different answer
        /// than the rule they stand for (an address is in the set iff one configured net
        /// contains it), for unsorted, repeated or overlapping entries of mixed lengths,
        /// and for one length with more networks than the sorted list holds.
        #[test]
        fn the_search_answers_as_ipnet_contains(
            // many /24s as well, so that one prefix length outgrows the sorted list
            nets in proptest::collection::vec((any::<u32>(), prop_oneof![0u8..=32, Just(24u8)]), 0..90),
            probes in proptest::collection::vec(any::<u32>(), 1..40),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, l)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).unwrap()))
                .collect();
            let set = IpSet::new(nets.clone());
            // probes near the configured networks as well as anywhere
            let near = nets.iter().map(|n| match n {
                IpNet::V4(n) => u32::from(n.network()) ^ 1,
                IpNet::V6(_) => 0,
            });
            for p in probes.into_iter().chain(near) {
                let addr = IpAddr::V4(p.into());
                prop_assert_eq!(set.contains(addr), nets.iter().any(|n| n.contains(&addr)), "{}", addr);
            }
        }
    }
}
