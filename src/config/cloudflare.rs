//! The `"cloudflare"` preset of `[client_ip] trusted_proxies` (docs/reference.md#tls-and-cloudflare): Cloudflare's
//! published edge ranges, compiled in so an operator behind Cloudflare does not copy them
//! by hand. Source: <https://www.cloudflare.com/ips-v4> and <https://www.cloudflare.com/ips-v6>,
//! as of 2026-11. When Cloudflare publishes a change, update this list (and README's date),
//! or list CIDRs in the config instead of the word.

use ipnet::IpNet;

/// The word that stands for the ranges below in `trusted_proxies`.
pub(crate) const PRESET: &str = "cloudflare";

/// Cloudflare's IPv4 ranges (`ips-v4`), in their published order.
pub(crate) const IPV4: [&str; 15] = [
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
];

/// Cloudflare's IPv6 ranges (`ips-v6`), in their published order.
pub(crate) const IPV6: [&str; 7] = [
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// Every range of the preset, IPv4 first.
pub(crate) fn ranges() -> Vec<IpNet> {
    IPV4.iter()
        .chain(IPV6.iter())
        .filter_map(|c| c.parse::<IpNet>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ip_set::IpSet;

    /// The list of the edge-deployment issue, verbatim: the preset is exactly this.
    const PUBLISHED: &str = "173.245.48.0/20 103.21.244.0/22 103.22.200.0/22 103.31.4.0/22 \
        141.101.64.0/18 108.162.192.0/18 190.93.240.0/20 188.114.96.0/20 197.234.240.0/22 \
        198.41.128.0/17 162.158.0.0/15 104.16.0.0/13 104.24.0.0/14 172.64.0.0/13 131.0.72.0/22 \
        2400:cb00::/32 2606:4700::/32 2803:f800::/32 2405:b500::/32 2405:8100::/32 \
        2a06:98c0::/29 2c0f:f248::/32";

    #[test]
    fn preset_is_exactly_the_published_list() {
        let want: Vec<&str> = PUBLISHED.split_whitespace().collect();
        let got: Vec<String> = ranges().iter().map(|n| n.to_string()).collect();
        assert_eq!(got, want);
        // every entry parsed and is written in canonical form (no host bits)
        for n in ranges() {
            assert_eq!(n, n.trunc(), "{n} has host bits");
        }
    }

    #[test]
    fn preset_matches_edge_addresses_only() {
        let set = IpSet::new(ranges());
        for yes in [
            "173.245.48.1",
            "104.16.0.1",
            "172.71.255.254",
            "2606:4700::6810:84e5",
            "::ffff:162.158.1.1",
        ] {
            assert!(set.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["203.0.113.9", "127.0.0.1", "104.32.0.1", "2001:db8::1", "::1"] {
            assert!(!set.contains(no.parse().unwrap()), "{no}");
        }
    }
}
