//! `[upstream]` and `[[upstreams]]` (docs/reference.md#upstream-clusters): where admitted
//! requests go.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::{defaults, Ctx};
use crate::config::file::{ClusterFile, GatewayFile, HealthCheckFile, UpstreamFile};
use crate::config::settings::{BackendSettings, ClusterSettings, HealthCheckSettings, Selection};

/// `[upstream]` (the cluster `default`, one backend) and `[[upstreams]]`.
/// At least one cluster must exist; names are unique.
pub(super) fn upstreams(c: &mut Ctx<'_, '_>, file: &GatewayFile) -> Vec<ClusterSettings> {
    let mut clusters = Vec::new();
    if let Some(u) = &file.upstream {
        clusters.push(upstream(c, u.get_ref()));
    }
    for u in &file.upstreams {
        if let Some(cluster) = cluster(c, u.get_ref(), u.span(), &clusters) {
            clusters.push(cluster);
        }
    }
    if clusters.is_empty() {
        c.r.whole("an upstream is required: [upstream] (one backend) or [[upstreams]] (named clusters)");
    }
    clusters
}

/// `[upstream]`: the cluster `default` of one backend, without health check.
fn upstream(c: &mut Ctx<'_, '_>, u: &UpstreamFile) -> ClusterSettings {
    let line = c.line(u.address.span());
    let address = u.address.get_ref().clone();
    if !valid_host_port(&address) {
        c.r.at(
            u.address.span(),
            format!("upstream.address: {address:?} is not host:port"),
        );
    }
    let sni = u.sni.clone().unwrap_or_default();
    if u.tls && sni.is_empty() {
        c.r.at(u.address.span(), "upstream.sni is required when upstream.tls = true");
    }
    ClusterSettings {
        name: Arc::from(defaults::CLUSTER),
        backends: vec![BackendSettings {
            addr: address.parse().ok(),
            address,
            line,
        }],
        selection: Selection::RoundRobin,
        tls: u.tls,
        sni,
        connect_timeout: c.duration(
            &u.connect_timeout,
            defaults::CONNECT_TIMEOUT,
            "upstream.connect_timeout",
        ),
        read_timeout: c.duration(&u.read_timeout, defaults::READ_TIMEOUT, "upstream.read_timeout"),
        health_check: None,
    }
}

/// One `[[upstreams]]` entry; `None` when its name is unusable (reported).
fn cluster(
    c: &mut Ctx<'_, '_>,
    u: &ClusterFile,
    span: Range<usize>,
    earlier: &[ClusterSettings],
) -> Option<ClusterSettings> {
    let name = u.name.get_ref();
    if !cluster_name(c, &u.name, earlier) {
        return None;
    }
    let backends = backends(c, name, &u.backends);
    let selection = c
        .choice(
            u.selection.as_ref(),
            &format!("upstreams.{name}: selection"),
            &[
                ("round_robin", Selection::RoundRobin),
                ("least_conn", Selection::LeastConn),
                ("consistent_hash", Selection::ConsistentHash),
            ],
        )
        .unwrap_or(Selection::RoundRobin);
    let sni = u.sni.clone().unwrap_or_default();
    if u.tls && sni.is_empty() {
        c.r.at(span, format!("upstreams.{name}: sni is required when tls = true"));
    }
    let connect_timeout = c.positive(
        &u.connect_timeout,
        defaults::CONNECT_TIMEOUT,
        &format!("upstreams.{name}.connect_timeout"),
    );
    let read_timeout = c.positive(
        &u.read_timeout,
        defaults::READ_TIMEOUT,
        &format!("upstreams.{name}.read_timeout"),
    );
    let health_check = u.health_check.as_ref().map(|h| health_check(c, name, h.get_ref()));
    Some(ClusterSettings {
        name: Arc::from(name.as_str()),
        backends,
        selection,
        tls: u.tls,
        sni,
        connect_timeout,
        read_timeout,
        health_check,
    })
}

/// A cluster name: letters, digits, `-`, `_`, `.`, not used before (`default` is taken by
/// `[upstream]` when it is there).
fn cluster_name(c: &mut Ctx<'_, '_>, name: &Spanned<String>, earlier: &[ClusterSettings]) -> bool {
    let text = name.get_ref();
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        c.r.at(
            name.span(),
            format!("upstreams: name {text:?} must be letters, digits, '-', '_' or '.'"),
        );
        return false;
    }
    if earlier.iter().any(|e| &*e.name == text) {
        let why = if text == defaults::CLUSTER {
            "is already defined by [upstream]; name this cluster differently or drop [upstream]"
        } else {
            "is defined twice"
        };
        c.r.at(name.span(), format!("upstreams: {text:?} {why}"));
        return false;
    }
    true
}

/// A cluster's `backends`: at least one, each `host:port` and listed once.
fn backends(c: &mut Ctx<'_, '_>, name: &str, list: &Spanned<Vec<Spanned<String>>>) -> Vec<BackendSettings> {
    let mut backends: Vec<BackendSettings> = Vec::new();
    if list.get_ref().is_empty() {
        c.r.at(
            list.span(),
            format!("upstreams.{name}: backends must list at least one host:port"),
        );
    }
    for b in list.get_ref() {
        let address = b.get_ref();
        if !valid_host_port(address) {
            c.r.at(
                b.span(),
                format!("upstreams.{name}: backend {address:?} is not host:port"),
            );
        } else if backends.iter().any(|e| e.address == *address) {
            c.r.at(
                b.span(),
                format!("upstreams.{name}: backend {address:?} is listed twice"),
            );
        } else {
            backends.push(BackendSettings {
                address: address.clone(),
                line: c.line(b.span()),
                addr: address.parse().ok(),
            });
        }
    }
    backends
}

/// A cluster's `health_check` table.
fn health_check(c: &mut Ctx<'_, '_>, cluster: &str, h: &HealthCheckFile) -> HealthCheckSettings {
    let path = h.path.get_ref();
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        c.r.at(
            h.path.span(),
            format!("upstreams.{cluster}.health_check: path {path:?} must start with '/' and hold no spaces"),
        );
    }
    let interval = c.positive(
        &h.interval,
        defaults::HEALTH_INTERVAL,
        &format!("upstreams.{cluster}.health_check.interval"),
    );
    let timeout = c.positive(
        &h.timeout,
        defaults::HEALTH_TIMEOUT,
        &format!("upstreams.{cluster}.health_check.timeout"),
    );
    let mut threshold = |v: &Option<Spanned<i64>>, field: &str| -> usize {
        let n = v.as_ref().map_or(defaults::HEALTH_THRESHOLD, |n| *n.get_ref());
        match usize::try_from(n) {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                let at = v.as_ref().map_or(h.path.span(), |n| n.span());
                c.r.at(
                    at,
                    format!("upstreams.{cluster}.health_check.{field} must be 1..1000, not {n}"),
                );
                1
            }
        }
    };
    let unhealthy_after = threshold(&h.unhealthy_after, "unhealthy_after");
    let healthy_after = threshold(&h.healthy_after, "healthy_after");
    HealthCheckSettings {
        path: path.clone(),
        interval,
        timeout,
        unhealthy_after,
        healthy_after,
    }
}

/// `host:port` or `IP:port`: a host of letters, digits, `.` and `-`.
fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        for ok in ["127.0.0.1:3000", "[::1]:80", "api.internal:443", "localhost:1"] {
            assert!(valid_host_port(ok), "{ok}");
        }
        for bad in ["127.0.0.1", "host:", ":80", "a b:80", "host:99999"] {
            assert!(!valid_host_port(bad), "{bad}");
        }
    }
}
