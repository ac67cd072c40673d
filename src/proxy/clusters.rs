//! Upstream clusters at run time (docs/reference.md#upstream-clusters): which backend a request goes to, on
//! pingora's own load balancer.
//!
//! Each cluster with more than one backend, or with a `health_check`, is a
//! [`LoadBalancer`] of pingora-load-balancing over static discovery: round robin and
//! Ketama consistent hashing are pingora's selections, least connections is
//! [`LeastConn`](super::least_conn::LeastConn) plugged into the same balancer. Health
//! checks are pingora's [`HttpHealthCheck`], run by the balancer as a pingora background
//! service (as memorysafety/river and pingora's own `load_balancer` example wire it); a
//! backend it takes out is skipped by `select_with`, and its gauge follows.
//!
//! A cluster of one backend without a health check (the `[upstream]` form) skips the
//! balancer: its peer is cloned as before, so the single-upstream path costs nothing new.
//! Routes are resolved to their cluster by index, once, at start.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt as _;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthCheck, HealthObserve, HttpHealthCheck};
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::services::background::background_service;
use pingora::services::ServiceWithDependents;
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora::{Error, ErrorType};
use prometheus::IntGauge;

use super::least_conn::{LeastConn, LoadGuard, Loads};
use crate::config::settings::{ClusterSettings, HealthCheckSettings, RouteUpstream, Selection};
use crate::config::Settings;
use crate::metrics::Metrics;

/// Bound on the candidates one selection walks (pingora's examples use the same).
const MAX_CANDIDATES: usize = 256;

/// How long an idle pooled connection to a backend is kept.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Every cluster, and which one each route uses.
pub(crate) struct Clusters {
    clusters: Box<[Cluster]>,
    /// By route index.
    routes: Box<[RouteUpstream]>,
    /// For a request without a route (never proxied; kept total): the cluster `default`
    /// or the first.
    fallback: RouteUpstream,
}

/// What one request's upstream attempts have used so far.
#[derive(Debug, Default)]
pub(crate) struct Attempt {
    /// `upstream_peer` calls: 1, or 2 after a retried connect failure.
    tries: u8,
    cluster: usize,
    /// The backend of the latest attempt (index in its cluster).
    backend: Option<usize>,
    /// Least-connections accounting for that backend, while the request lasts.
    load: Option<LoadGuard>,
}

impl Attempt {
    /// The upstream response is complete: the backend's least-connections slot is free
    /// again (before the client has the last byte, so its next request sees it free).
    pub(crate) fn response_done(&mut self) {
        self.load = None;
    }
}

struct Cluster {
    name: Arc<str>,
    /// One ready peer per configured backend (address, TLS, timeouts), cloned per request.
    peers: Box<[HttpPeer]>,
    addrs: Box<[SocketAddr]>,
    balancer: Balancer,
}

enum Balancer {
    /// One backend, no health check: nothing to choose.
    Single,
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
    LeastConn(Arc<LoadBalancer<LeastConn>>, Arc<Loads>),
}

impl Cluster {
    fn index_of(&self, b: &Backend) -> Option<usize> {
        let addr = b.addr.as_inet()?;
        self.addrs.iter().position(|a| a == addr)
    }

    /// The backend for this attempt: the balancer's first healthy choice other than
    /// `exclude` (the backend a retried attempt failed to connect to).
    fn pick(&self, client: Option<IpAddr>, exclude: Option<usize>) -> Option<usize> {
        fn select<S>(c: &Cluster, lb: &LoadBalancer<S>, key: &[u8], exclude: Option<usize>) -> Option<usize>
        where
            S: BackendSelection + 'static,
            S::Iter: BackendIter,
        {
            let chosen = lb.select_with(key, MAX_CANDIDATES, |b, healthy| {
                healthy && (exclude.is_none() || c.index_of(b) != exclude)
            })?;
            c.index_of(&chosen)
        }
        match &self.balancer {
            Balancer::Single => (exclude != Some(0)).then_some(0),
            Balancer::RoundRobin(lb) => select(self, lb, b"", exclude),
            Balancer::LeastConn(lb, _) => select(self, lb, b"", exclude),
            Balancer::Consistent(lb) => {
                let mut buf = [0u8; 16];
                let key: &[u8] = match client {
                    Some(IpAddr::V4(ip)) => {
                        buf[..4].copy_from_slice(&ip.octets());
                        &buf[..4]
                    }
                    Some(IpAddr::V6(ip)) => {
                        buf.copy_from_slice(&ip.octets());
                        &buf
                    }
                    None => b"",
                };
                select(self, lb, key, exclude)
            }
        }
    }
}

impl Clusters {
    /// Builds every cluster of the settings (backends resolved by `config::load`), and the
    /// background services that run their health checks, for the pingora server to start.
    pub(crate) fn build(
        settings: &Settings,
        metrics: &Metrics,
    ) -> anyhow::Result<(Clusters, Vec<Box<dyn ServiceWithDependents>>)> {
        let mut services = Vec::new();
        let mut clusters = Vec::new();
        for c in &settings.upstreams {
            clusters.push(Cluster::build(c, metrics, &mut services)?);
        }
        let fallback = RouteUpstream {
            cluster: settings
                .upstreams
                .iter()
                .position(|c| &*c.name == crate::config::validate::defaults::CLUSTER)
                .unwrap_or(0),
            read_timeout: None,
            websocket: false,
        };
        if clusters.is_empty() {
            anyhow::bail!("no upstream cluster is configured");
        }
        Ok((
            Clusters {
                clusters: clusters.into(),
                routes: settings.route_upstreams.clone().into(),
                fallback,
            },
            services,
        ))
    }

    fn cluster(&self, index: usize) -> Option<&Cluster> {
        self.clusters.get(index)
    }

    /// The peer for the next attempt of a request on `route`: its cluster's choice (by
    /// the client IP for `consistent_hash`), never the backend the previous attempt
    /// failed to connect to, with the route's `read_timeout` when it sets one. `None`
    /// when no backend is eligible (all unhealthy, or no other one to retry on).
    pub(crate) fn peer(
        &self,
        route: Option<usize>,
        client: Option<IpAddr>,
        attempt: &mut Attempt,
    ) -> Option<Box<HttpPeer>> {
        let target = route.and_then(|r| self.routes.get(r)).unwrap_or(&self.fallback);
        let cluster = self.cluster(target.cluster)?;
        attempt.tries = attempt.tries.saturating_add(1);
        attempt.cluster = target.cluster;
        attempt.load = None;
        let index = cluster.pick(client, attempt.backend.take())?;
        attempt.backend = Some(index);
        if let Balancer::LeastConn(_, loads) = &cluster.balancer {
            attempt.load = Some(loads.enter(index));
        }
        let mut peer = Box::new(cluster.peers.get(index)?.clone());
        if let Some(t) = target.read_timeout {
            peer.options.read_timeout = Some(t);
        }
        // `Upgrade` reaches the upstream only on `websocket = true` routes (then only a
        // WebSocket handshake, as pingora normalises it); elsewhere pingora drops it.
        peer.options.http_upstream_request_policy = if target.websocket {
            HttpUpstreamRequestPolicy::standard()
        } else {
            HttpUpstreamRequestPolicy::deny_upgrades()
        };
        Some(peer)
    }

    /// Whether a connect failure may be retried: once per request (docs/reference.md#upstream-clusters), and only
    /// where the cluster has another backend. Nothing has been sent upstream yet.
    pub(crate) fn may_retry(&self, attempt: &Attempt) -> bool {
        attempt.tries == 1 && self.cluster(attempt.cluster).is_some_and(|c| c.peers.len() > 1)
    }

    /// Name of the cluster of the latest attempt (for log lines).
    pub(crate) fn name(&self, attempt: &Attempt) -> &str {
        self.cluster(attempt.cluster).map_or("", |c| &c.name)
    }
}

impl Cluster {
    fn build(
        c: &ClusterSettings,
        metrics: &Metrics,
        services: &mut Vec<Box<dyn ServiceWithDependents>>,
    ) -> anyhow::Result<Cluster> {
        let mut addrs = Vec::new();
        let mut peers = Vec::new();
        let mut gauges = Vec::new();
        for b in &c.backends {
            let addr = b
                .addr
                .ok_or_else(|| anyhow::anyhow!("upstreams.{}: backend {} is not resolved", c.name, b.address))?;
            let mut peer = HttpPeer::new(addr, c.tls, c.sni.clone());
            peer.options.connection_timeout = Some(c.connect_timeout);
            peer.options.total_connection_timeout = Some(c.connect_timeout);
            peer.options.read_timeout = Some(c.read_timeout);
            peer.options.idle_timeout = Some(IDLE_TIMEOUT);
            addrs.push(addr);
            peers.push(peer);
            gauges.push((addr, b.address.clone(), metrics.backend_health(&c.name, &b.address)));
        }
        let balancer = match (&c.health_check, c.selection, addrs.len()) {
            (None, _, 1) => Balancer::Single,
            (hc, Selection::RoundRobin, _) => {
                Balancer::RoundRobin(balancer::<RoundRobin>(c, &addrs, None, hc, gauges, services)?)
            }
            (hc, Selection::ConsistentHash, _) => {
                Balancer::Consistent(balancer::<Consistent>(c, &addrs, None, hc, gauges, services)?)
            }
            (hc, Selection::LeastConn, _) => {
                let loads = Loads::new(&addrs);
                let lb = balancer::<LeastConn>(c, &addrs, Some(loads.clone()), hc, gauges, services)?;
                Balancer::LeastConn(lb, loads)
            }
        };
        Ok(Cluster {
            name: c.name.clone(),
            peers: peers.into(),
            addrs: addrs.into(),
            balancer,
        })
    }
}

/// A pingora load balancer over the cluster's backends (static discovery, updated once
/// here); with a health check, also the background service that runs it every `interval`.
fn balancer<S>(
    c: &ClusterSettings,
    addrs: &[SocketAddr],
    config: Option<S::Config>,
    health: &Option<HealthCheckSettings>,
    gauges: Vec<(SocketAddr, String, IntGauge)>,
    services: &mut Vec<Box<dyn ServiceWithDependents>>,
) -> anyhow::Result<Arc<LoadBalancer<S>>>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let mut backends = Backends::new(Static::try_from_iter(addrs.iter().copied())?);
    if let Some(h) = health {
        backends.set_health_check(health_check(c, h, gauges)?);
    }
    let mut lb = LoadBalancer::<S>::from_backends_with_config(backends, config);
    match lb.update().now_or_never() {
        Some(Ok(())) => {}
        Some(Err(e)) => anyhow::bail!("upstreams.{}: {e}", c.name),
        None => anyhow::bail!("upstreams.{}: static discovery did not finish at once", c.name),
    }
    let Some(h) = health else {
        return Ok(Arc::new(lb));
    };
    lb.health_check_frequency = Some(h.interval);
    // One slow backend must not delay the verdict on the others.
    lb.parallel_health_check = true;
    let service = background_service(&format!("health check {}", c.name), lb);
    let lb = service.task();
    services.push(Box::new(service));
    Ok(lb)
}

/// pingora's HTTP health check for a cluster: `GET path` with `Host` = the cluster's SNI
/// (or its first backend's host), each step bounded by `timeout`; a 2xx passes.
fn health_check(
    c: &ClusterSettings,
    h: &HealthCheckSettings,
    gauges: Vec<(SocketAddr, String, IntGauge)>,
) -> anyhow::Result<Box<dyn HealthCheck + Send + Sync>> {
    let host = if c.sni.is_empty() {
        c.backends
            .first()
            .and_then(|b| b.address.rsplit_once(':'))
            .map_or("localhost", |(host, _)| host)
            .to_string()
    } else {
        c.sni.clone()
    };
    let mut hc = HttpHealthCheck::new("localhost", c.tls);
    hc.peer_template.sni = c.sni.clone();
    let o = &mut hc.peer_template.options;
    o.connection_timeout = Some(h.timeout);
    o.total_connection_timeout = Some(h.timeout);
    o.read_timeout = Some(h.timeout);
    o.write_timeout = Some(h.timeout);
    let mut req = RequestHeader::build("GET", h.path.as_bytes(), None)?;
    req.insert_header("Host", host)?;
    req.insert_header("User-Agent", "authgate-health-check")?;
    hc.req = req;
    hc.consecutive_failure = h.unhealthy_after;
    hc.consecutive_success = h.healthy_after;
    hc.validator = Some(Box::new(|resp: &ResponseHeader| {
        if resp.status.is_success() {
            Ok(())
        } else {
            Error::e_explain(
                ErrorType::CustomCode("health check status", resp.status.as_u16()),
                "not a 2xx",
            )
        }
    }));
    let labels: Vec<(SocketAddr, String)> = gauges.iter().map(|(a, l, _)| (*a, l.clone())).collect();
    let cluster = c.name.clone();
    hc.set_backend_summary(move |b| {
        let label = b
            .addr
            .as_inet()
            .and_then(|a| labels.iter().find(|(x, _)| x == a))
            .map_or_else(|| format!("{:?}", b.addr), |(_, l)| l.clone());
        format!("upstream {cluster} backend {label}")
    });
    hc.health_changed_callback = Some(Box::new(HealthGauges {
        cluster: c.name.clone(),
        gauges,
    }));
    Ok(Box::new(hc))
}

/// Keeps `authgate_upstream_backend_healthy` in step with pingora's verdicts.
struct HealthGauges {
    cluster: Arc<str>,
    gauges: Vec<(SocketAddr, String, IntGauge)>,
}

#[async_trait]
impl HealthObserve for HealthGauges {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let Some((_, label, gauge)) = target
            .addr
            .as_inet()
            .and_then(|a| self.gauges.iter().find(|(x, _, _)| x == a))
        else {
            return;
        };
        gauge.set(i64::from(healthy));
        if healthy {
            tracing::info!(upstream = %self.cluster, backend = %label, "backend passed its health check: back in rotation");
        } else {
            tracing::warn!(upstream = %self.cluster, backend = %label, "backend failed its health check: out of rotation");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn clusters(upstreams: &str) -> Clusters {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8443\"\n{upstreams}\n[policies]\nfile = \"partners.toml\"\n\
             [[routes]]\nname = \"plain\"\npath = \"/a\"\nauth = \"none\"\n\
             [[routes]]\nname = \"stream\"\npath = \"/s\"\nauth = \"none\"\nread_timeout = \"5m\"\n"
        );
        let (settings, problems) = crate::config::load::settings_from_text(Path::new("/x/authgate.toml"), &text);
        assert!(problems.is_empty(), "{problems}");
        let settings = settings.unwrap();
        let metrics = Metrics::new([("plain", "default"), ("stream", "default")], false).unwrap();
        let (clusters, services) = Clusters::build(&settings, &metrics).unwrap();
        assert!(services.is_empty(), "no health check, no background service");
        clusters
    }

    fn port(peer: &HttpPeer) -> u16 {
        peer._address.as_inet().unwrap().port()
    }

    #[test]
    fn one_backend_is_cloned_as_configured_and_never_retried() {
        let c = clusters("[upstream]\naddress = \"127.0.0.1:7001\"\nread_timeout = \"2s\"\n");
        assert!(matches!(c.clusters[0].balancer, Balancer::Single));
        let mut attempt = Attempt::default();
        let peer = c.peer(Some(0), None, &mut attempt).unwrap();
        assert_eq!(port(&peer), 7001);
        assert_eq!(peer.options.read_timeout, Some(Duration::from_secs(2)));
        assert!(!c.may_retry(&attempt), "nowhere else to go");
        // the route's own read_timeout wins over the cluster's
        let peer = c.peer(Some(1), None, &mut Attempt::default()).unwrap();
        assert_eq!(peer.options.read_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn round_robin_alternates_and_a_retry_avoids_the_backend_that_failed() {
        let c = clusters("[[upstreams]]\nname = \"default\"\nbackends = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\n");
        let ports: Vec<u16> = (0..4)
            .map(|_| port(&c.peer(Some(0), None, &mut Attempt::default()).unwrap()))
            .collect();
        assert!(ports.windows(2).all(|w| w[0] != w[1]), "{ports:?}");
        for _ in 0..4 {
            let mut attempt = Attempt::default();
            let first = port(&c.peer(Some(0), None, &mut attempt).unwrap());
            assert!(c.may_retry(&attempt));
            let second = port(&c.peer(Some(0), None, &mut attempt).unwrap());
            assert_ne!(first, second, "the retry went back to the backend that refused");
            assert!(!c.may_retry(&attempt), "one retry only");
        }
    }

    #[test]
    fn consistent_hash_keys_on_the_client_ip() {
        let c = clusters(
            "[[upstreams]]\nname = \"default\"\nselection = \"consistent_hash\"\n\
             backends = [\"127.0.0.1:7001\", \"127.0.0.1:7002\", \"127.0.0.1:7003\"]\n",
        );
        for i in 0..20u8 {
            let ip = Some(IpAddr::from([203, 0, 113, i]));
            let first = port(&c.peer(Some(0), ip, &mut Attempt::default()).unwrap());
            for _ in 0..3 {
                assert_eq!(port(&c.peer(Some(0), ip, &mut Attempt::default()).unwrap()), first);
            }
        }
    }
}
