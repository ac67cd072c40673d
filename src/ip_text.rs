//! An IP address as text, fast: `X-Forwarded-For`, `X-Real-IP` and the access log's
//! `client_ip` all write one per request. A leaf helper (it imports nothing), so the log
//! writer and the header rules share it without one reaching into the other.

use std::net::IpAddr;

/// Appends an address in its standard text form. IPv4 by hand: `Display` for `IpAddr`
/// goes through the padding-aware formatter and cost more than the whole route match.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
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
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, ip);
    s
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
}
