//! `[client_ip]` (docs/reference.md#client-ip): where the client address comes from, and
//! which peers may say.

use toml::Spanned;

use super::Ctx;
use crate::config::cloudflare;
use crate::config::file::ClientIpFile;
use crate::config::problem::Reporter;
use crate::policy::client_ip::{ClientIpPolicy, IpSource};
use crate::policy::ip_set::{parse_net, IpSet};

/// `[client_ip]`: `source` and `trusted_proxies`.
pub(super) fn client_ip(c: &mut Ctx<'_, '_>, f: &ClientIpFile) -> ClientIpPolicy {
    let source = c
        .choice(
            f.source.as_ref(),
            "client_ip.source:",
            &[
                ("x-forwarded-for", IpSource::XForwardedFor),
                ("cf-connecting-ip", IpSource::CfConnectingIp),
                ("peer", IpSource::Peer),
            ],
        )
        .unwrap_or(IpSource::Peer);
    ClientIpPolicy {
        source,
        trusted_proxies: trusted_proxies(c.r, &f.trusted_proxies),
    }
}

/// `[client_ip] trusted_proxies`: CIDRs, bare addresses, and the word `"cloudflare"`
/// (Cloudflare's published ranges, docs/reference.md#tls-and-cloudflare).
fn trusted_proxies(r: &mut Reporter<'_>, list: &[Spanned<String>]) -> IpSet {
    let mut nets = Vec::new();
    for e in list {
        if e.get_ref().trim() == cloudflare::PRESET {
            nets.extend(cloudflare::ranges());
            continue;
        }
        match parse_net(e.get_ref()) {
            Ok(n) => nets.push(n),
            Err(msg) => r.at(
                e.span(),
                format!(
                    "client_ip.trusted_proxies: {msg} (nor the preset \"{}\")",
                    cloudflare::PRESET
                ),
            ),
        }
    }
    IpSet::new(nets)
}
