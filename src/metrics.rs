//! Every Prometheus metric of docs/reference.md#metrics, declared once, with help text.
//!
//! Label values come only from config or fixed sets. Per-route children are resolved once
//! (histograms at start, counters on first use) so the request path takes no registry lock.

use std::sync::OnceLock;

use crate::policy::denial::Reason;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Route label for requests that matched no route (404, and 400/413 before routing).
pub(crate) const NO_ROUTE: &str = "none";

/// Latency buckets for a gateway: 50 µs .. 10 s.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The method label set (docs/reference.md#metrics).
pub(crate) const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"];

const STATUSES: usize = 600;

/// Registers `metric` with `registry` and hands it back (each metric is declared, with its
/// help text, where it is registered: tests/docs.rs reads the declarations from this file).
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Index of a method in [`METHODS`].
pub(crate) fn method_index(method: &str) -> usize {
    METHODS[..7].iter().position(|m| *m == method).unwrap_or(7)
}

struct RouteMetrics {
    name: String,
    request_duration: Histogram,
    /// `None` for the no-route entry: nothing unrouted reaches an upstream.
    upstream_duration: Option<Histogram>,
    requests: Vec<OnceLock<IntCounter>>,
    denied: Vec<OnceLock<IntCounter>>,
}

impl RouteMetrics {
    /// The latency histograms, with one child per route (and one for no route) resolved
    /// now, so the request path never looks a label up.
    fn register<'a>(
        registry: &Registry,
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Vec<RouteMetrics>, prometheus::Error> {
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "authgate_request_duration_seconds",
                "Time from request head to response end, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "authgate_upstream_duration_seconds",
                "Time from choosing the upstream to its response head, by route and upstream cluster.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "upstream"],
        )?;
        let request_duration = register(registry, request_duration)?;
        let upstream_duration = register(registry, upstream_duration)?;
        let routes = routes.into_iter().map(|(r, u)| (r, Some(u)));
        let per_route = routes.chain([(NO_ROUTE, None)]).map(|(name, upstream)| RouteMetrics {
            name: name.to_string(),
            request_duration: request_duration.with_label_values(&[name]),
            upstream_duration: upstream.map(|u| upstream_duration.with_label_values(&[name, u])),
            requests: (0..METHODS.len() * STATUSES).map(|_| OnceLock::new()).collect(),
            denied: (0..Reason::ALL.len()).map(|_| OnceLock::new()).collect(),
        });
        Ok(per_route.collect())
    }
}

/// What a Redis command was for: the `op` label of `authgate_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisOp {
    /// Step 6: the rate-limit script.
    Limit,
    /// Step 7: is this org one a replica learned?
    OrgRead,
    /// A create response taught an org, or `authgate orgs import`.
    OrgWrite,
    /// Revocation reads, writes and the subscription.
    Revocation,
    /// Writing back what Redis lost.
    Resync,
    /// Connecting and probing.
    Connect,
    /// A replica telling the others (and `authgate revoke`) what it has applied.
    Announce,
}

impl RedisOp {
    /// Every op, for pre-declared metric children.
    pub(crate) const ALL: [RedisOp; 7] = [
        RedisOp::Limit,
        RedisOp::OrgRead,
        RedisOp::OrgWrite,
        RedisOp::Revocation,
        RedisOp::Resync,
        RedisOp::Connect,
        RedisOp::Announce,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RedisOp::Limit => "limit",
            RedisOp::OrgRead => "org_read",
            RedisOp::OrgWrite => "org_write",
            RedisOp::Revocation => "revocation",
            RedisOp::Resync => "resync",
            RedisOp::Connect => "connect",
            RedisOp::Announce => "announce",
        }
    }
}

/// Why a Redis command failed: the `kind` label of `authgate_redis_errors_total`. Only the
/// first six make a replica treat Redis as down; the last three are one command's (or one
/// key's) problem (docs/reference.md#partial-failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisErrorKind {
    /// No answer within the time bound.
    Timeout,
    /// The connection broke, or could not be opened.
    Connection,
    /// `READONLY`: a demoted primary.
    ReadOnly,
    /// `LOADING`: the server is loading its dataset.
    Loading,
    /// `MASTERDOWN`: a replica without its primary.
    MasterDown,
    /// `OOM`: `maxmemory` reached with `noeviction`.
    Oom,
    /// A reply of a type the command never answers with.
    UnexpectedReply,
    /// Another error reply (a script error).
    Error,
    /// One key holds a value of the wrong type, or not a number where one belongs.
    BadValue,
}

impl RedisErrorKind {
    /// Every kind, for pre-declared metric children.
    pub(crate) const ALL: [RedisErrorKind; 9] = [
        RedisErrorKind::Timeout,
        RedisErrorKind::Connection,
        RedisErrorKind::ReadOnly,
        RedisErrorKind::Loading,
        RedisErrorKind::MasterDown,
        RedisErrorKind::Oom,
        RedisErrorKind::UnexpectedReply,
        RedisErrorKind::Error,
        RedisErrorKind::BadValue,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RedisErrorKind::Timeout => "timeout",
            RedisErrorKind::Connection => "connection",
            RedisErrorKind::ReadOnly => "readonly",
            RedisErrorKind::Loading => "loading",
            RedisErrorKind::MasterDown => "masterdown",
            RedisErrorKind::Oom => "oom",
            RedisErrorKind::UnexpectedReply => "unexpected_reply",
            RedisErrorKind::Error => "error",
            RedisErrorKind::BadValue => "bad_value",
        }
    }
}

/// A local state file: the `file` label of `authgate_state_write_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateFile {
    /// The revocation state file (`<policy file>.revocations.jsonl`).
    Revocations,
    /// The learned-orgs journal (`[policies] learned_orgs_file`).
    LearnedOrgs,
}

impl StateFile {
    /// Every state file, for pre-declared metric children.
    pub(crate) const ALL: [StateFile; 2] = [StateFile::Revocations, StateFile::LearnedOrgs];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StateFile::Revocations => "revocations",
            StateFile::LearnedOrgs => "learned_orgs",
        }
    }
}

/// Which of a replica's Redis connections was replaced: the `connection` label of
/// `authgate_redis_connections_replaced_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisConnection {
    /// The housekeeping connection (probes, resyncs, announcements, org writes).
    Shared,
    /// A proxy worker's own connection for request commands.
    Worker,
    /// The revocation subscription.
    Subscription,
}

impl RedisConnection {
    /// Every connection kind, for pre-declared metric children.
    pub(crate) const ALL: [RedisConnection; 3] = [
        RedisConnection::Shared,
        RedisConnection::Worker,
        RedisConnection::Subscription,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RedisConnection::Shared => "shared",
            RedisConnection::Worker => "worker",
            RedisConnection::Subscription => "subscription",
        }
    }
}

/// The shared-state (Redis) metrics (docs/reference.md#metrics), registered only when
/// `[redis]` is configured, so a "Redis down" alert never fires on an embedded deployment.
/// Cloned handles: the stores update them without knowing the registry.
#[derive(Clone)]
pub(crate) struct RedisMetrics {
    /// `authgate_redis_up`.
    pub(crate) up: IntGauge,
    errors: IntCounterVec,
    /// `authgate_redis_duration_seconds`.
    pub(crate) duration: Histogram,
    /// `authgate_revocations`: runtime revocations in force on this replica.
    pub(crate) revocations: IntGauge,
    /// `authgate_revocations_age_seconds`: how old this replica's view of them may be.
    pub(crate) revocations_age: Gauge,
    replaced: IntCounterVec,
}

impl RedisMetrics {
    /// Handles that no registry exports (the CLI talks to Redis too).
    pub(crate) fn unregistered() -> Result<RedisMetrics, prometheus::Error> {
        RedisMetrics::register(&Registry::new())
    }

    /// Counts a failed (or timed-out) command.
    pub(crate) fn error(&self, op: RedisOp, kind: RedisErrorKind) {
        self.errors.with_label_values(&[op.as_str(), kind.as_str()]).inc();
    }

    /// Counts a connection thrown away for a new one.
    pub(crate) fn replaced(&self, conn: RedisConnection) {
        self.replaced.with_label_values(&[conn.as_str()]).inc();
    }

    fn register(registry: &Registry) -> Result<RedisMetrics, prometheus::Error> {
        let up = IntGauge::new(
            "authgate_redis_up",
            "1 while Redis answers (requests use the shared state), 0 while they fall back per on_error.",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "authgate_redis_errors_total",
                "Redis commands that failed or took longer than [redis] timeout, by what they were for and why \
                 (kind=\"bad_value\": one key held a foreign value; only that principal fell back per on_error).",
            ),
            &["op", "kind"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "authgate_redis_duration_seconds",
                "Time Redis commands took, answered or not.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let revocations = IntGauge::new(
            "authgate_revocations",
            "Keys revoked at runtime (authgate revoke) and in force on this replica.",
        )?;
        let revocations_age = Gauge::new(
            "authgate_revocations_age_seconds",
            "Age of this replica's view of the shared revocations: 0-1 s while its subscription is live; \
             past [redis] revocations_max_age the view is stale (on_error = deny answers 503).",
        )?;
        let replaced = IntCounterVec::new(
            Opts::new(
                "authgate_redis_connections_replaced_total",
                "Redis connections dropped for a new one (timeout, failed probe, READONLY/LOADING/MASTERDOWN/OOM).",
            ),
            &["connection"],
        )?;
        for op in RedisOp::ALL {
            for kind in RedisErrorKind::ALL {
                errors.with_label_values(&[op.as_str(), kind.as_str()]);
            }
        }
        for conn in RedisConnection::ALL {
            replaced.with_label_values(&[conn.as_str()]);
        }
        Ok(RedisMetrics {
            up: register(registry, up)?,
            errors: register(registry, errors)?,
            duration: register(registry, duration)?,
            revocations: register(registry, revocations)?,
            revocations_age: register(registry, revocations_age)?,
            replaced: register(registry, replaced)?,
        })
    }
}

/// `authgate_validation_failures_total`, registered with every gateway (0 series are only
/// declared for spec routes).
fn validation_metric(registry: &Registry) -> Result<IntCounterVec, prometheus::Error> {
    let v = IntCounterVec::new(
        Opts::new(
            "authgate_validation_failures_total",
            "Requests that broke their OpenAPI operation's contract (step 7a), by route and failing location; counted under validate = enforce and report.",
        ),
        &["route", "location"],
    )?;
    register(registry, v)
}

/// The metrics of the TLS listener (`[server.tls]`), registered only when it is configured:
/// an expiry gauge of 0 would look like a certificate that expired in 1970.
#[derive(Clone)]
pub(crate) struct TlsMetrics {
    /// `authgate_tls_cert_expiry_seconds`: the served leaf's notAfter, Unix seconds.
    pub(crate) cert_expiry: IntGauge,
    /// `authgate_tls_handshakes_begun_total`: ClientHellos that reached the certificate resolver.
    pub(crate) handshakes_begun: IntCounter,
    /// `authgate_tls_handshakes_completed_total`: handshakes that completed.
    pub(crate) handshakes_completed: IntCounter,
    /// `authgate_tls_client_certs_rejected_total`: client certificates the verifier refused.
    pub(crate) client_certs_rejected: IntCounter,
}

/// `authgate_connections_closed_total{listener, reason}`: why the gateway closed a client
/// connection on its own. Every deadline and bound that ends a connection counts here, so an
/// operator sees slow or greedy clients being shed.
/// Which listener closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The proxy listener (plain, TLS, HTTP/1 and h2).
    Proxy,
    /// The admin listener.
    Admin,
}

/// What ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// No complete request head (HTTP/1) or first HEADERS (h2, handshake included) within
    /// `header_timeout`.
    HeaderTimeout,
    /// A held body not whole within `body_timeout`, or a streamed body paused longer.
    BodyTimeout,
    /// The client accepted no response bytes for `send_timeout`.
    SendTimeout,
    /// A request head larger than `max_head_bytes` (431).
    HeadTooLarge,
    /// An h2 connection with no open stream for `header_timeout` (GOAWAY).
    Idle,
    /// An admin connection evicted to make room for a new one.
    Evicted,
}

impl Listener {
    const ALL: [Listener; 2] = [Listener::Proxy, Listener::Admin];

    fn as_str(self) -> &'static str {
        match self {
            Listener::Proxy => "proxy",
            Listener::Admin => "admin",
        }
    }
}

impl CloseReason {
    const ALL: [CloseReason; 6] = [
        CloseReason::HeaderTimeout,
        CloseReason::BodyTimeout,
        CloseReason::SendTimeout,
        CloseReason::HeadTooLarge,
        CloseReason::Idle,
        CloseReason::Evicted,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::HeadTooLarge => "head_too_large",
            CloseReason::Idle => "idle",
            CloseReason::Evicted => "evicted",
        }
    }
}

/// The counters, one per (listener, reason), resolved at start: counting is one atomic add.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionsClosed {
    counters: Vec<IntCounter>,
}

impl ConnectionsClosed {
    /// Registers `authgate_connections_closed_total` with every series at 0.
    pub(crate) fn register(registry: &Registry) -> Result<ConnectionsClosed, prometheus::Error> {
        let family = IntCounterVec::new(
            Opts::new(
                "authgate_connections_closed_total",
                "Client connections the gateway closed on its own, by listener and reason (a deadline or bound passed, or an admin slot was needed).",
            ),
            &["listener", "reason"],
        )?;
        let family = register(registry, family)?;
        let mut counters = Vec::new();
        for listener in Listener::ALL {
            for reason in CloseReason::ALL {
                counters.push(family.with_label_values(&[listener.as_str(), reason.as_str()]));
            }
        }
        Ok(ConnectionsClosed { counters })
    }

    /// Counts one closed connection.
    pub(crate) fn count(&self, listener: Listener, reason: CloseReason) {
        let i = listener as usize * CloseReason::ALL.len() + reason as usize;
        if let Some(c) = self.counters.get(i) {
            c.inc();
        }
    }
}

/// The gateway's metrics and the registry `/metrics` serves.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    denied: IntCounterVec,
    rate_limited: IntCounterVec,
    backend_healthy: IntGaugeVec,
    state: StateMetrics,
    /// `authgate_validation_failures_total{route, location}` (step 7a).
    validation: IntCounterVec,
    redis: Option<RedisMetrics>,
    routes: Vec<RouteMetrics>,
    connections_closed: ConnectionsClosed,
}

/// What the gateway's state does outside requests: reloads, JWKS fetches, the policy in
/// force, learned orgs.
struct StateMetrics {
    reloads: IntCounterVec,
    last_reload_ok: IntGauge,
    jwks_fetches: IntCounterVec,
    jwks_keys_ignored: IntCounter,
    partners: IntGauge,
    learned_orgs: IntGauge,
    journal_failures: IntCounter,
    state_write_failures: IntCounterVec,
}

impl StateMetrics {
    fn register(registry: &Registry) -> Result<StateMetrics, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new("authgate_config_reloads_total", "Policy reloads (SIGHUP), by result."),
            &["result"],
        )?;
        let last_reload_ok = IntGauge::new(
            "authgate_config_last_reload_successful",
            "1 when the last reload (or the start) succeeded, 0 while a rejected reload is the latest.",
        )?;
        last_reload_ok.set(1);
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "authgate_jwks_fetches_total",
                "JWKS URL fetches, by result (failures keep the last good key set).",
            ),
            &["result"],
        )?;
        let jwks_keys_ignored = IntCounter::new(
            "authgate_jwks_keys_ignored_total",
            "Keys fetched from the JWKS URL and ignored because their kid is pinned by the config.",
        )?;
        let partners = IntGauge::new("authgate_partners", "Partners in the policy in force.")?;
        let learned_orgs = IntGauge::new("authgate_learned_orgs", "Orgs learned from create responses.")?;
        let journal_failures = IntCounter::new(
            "authgate_learned_orgs_journal_failures_total",
            "Learned orgs that could not be appended to the journal (the response still passed).",
        )?;
        let state_write_failures = IntCounterVec::new(
            Opts::new(
                "authgate_state_write_failures_total",
                "Appends a local state file did not take (full disk, read-only volume, file deleted under the \
                 gateway): cut back to the last whole line and retried; the replica is not ready until written.",
            ),
            &["file"],
        )?;
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        for file in StateFile::ALL {
            state_write_failures.with_label_values(&[file.as_str()]);
        }
        Ok(StateMetrics {
            reloads: register(registry, reloads)?,
            last_reload_ok: register(registry, last_reload_ok)?,
            jwks_fetches: register(registry, jwks_fetches)?,
            jwks_keys_ignored: register(registry, jwks_keys_ignored)?,
            partners: register(registry, partners)?,
            learned_orgs: register(registry, learned_orgs)?,
            journal_failures: register(registry, journal_failures)?,
            state_write_failures: register(registry, state_write_failures)?,
        })
    }
}

impl Metrics {
    /// Registers every metric; `routes` are the configured routes in order, each as
    /// (route name, name of its upstream cluster). With `redis`, the shared-state metrics
    /// (docs/reference.md#metrics) are registered too.
    pub(crate) fn new<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
        redis: bool,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "authgate_requests_total",
                "Requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let denied = IntCounterVec::new(
            Opts::new(
                "authgate_denied_total",
                "Requests the gateway refused or could not forward, by route and reason.",
            ),
            &["route", "reason"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "authgate_rate_limited_total",
                "Requests refused by a rate limit, by limit and partner (empty for orgs).",
            ),
            &["limit", "partner"],
        )?;
        let backend_healthy = IntGaugeVec::new(
            Opts::new(
                "authgate_upstream_backend_healthy",
                "1 while a backend gets new requests, 0 while its health check keeps it out.",
            ),
            &["upstream", "backend"],
        )?;
        Ok(Metrics {
            requests: register(&registry, requests)?,
            denied: register(&registry, denied)?,
            rate_limited: register(&registry, rate_limited)?,
            backend_healthy: register(&registry, backend_healthy)?,
            routes: RouteMetrics::register(&registry, routes)?,
            state: StateMetrics::register(&registry)?,
            validation: validation_metric(&registry)?,
            redis: redis.then(|| RedisMetrics::register(&registry)).transpose()?,
            connections_closed: ConnectionsClosed::register(&registry)?,
            registry,
        })
    }

    fn route(&self, index: Option<usize>) -> &RouteMetrics {
        let last = self.routes.len() - 1;
        &self.routes[index.map_or(last, |i| i.min(last))]
    }

    /// Registers the TLS listener's metrics (only when `[server.tls]` is configured).
    pub(crate) fn tls(&self) -> Result<TlsMetrics, prometheus::Error> {
        let cert_expiry = IntGauge::new(
            "authgate_tls_cert_expiry_seconds",
            "notAfter of the certificate the proxy listener serves, as a Unix timestamp.",
        )?;
        let handshakes_begun = IntCounter::new(
            "authgate_tls_handshakes_begun_total",
            "TLS handshakes begun (a ClientHello reached certificate selection).",
        )?;
        let handshakes_completed = IntCounter::new(
            "authgate_tls_handshakes_completed_total",
            "TLS handshakes completed; begun minus completed were refused or abandoned.",
        )?;
        let client_certs_rejected = IntCounter::new(
            "authgate_tls_client_certs_rejected_total",
            "Client certificates refused at the handshake (not signed by client_ca_file, expired, malformed).",
        )?;
        Ok(TlsMetrics {
            cert_expiry: register(&self.registry, cert_expiry)?,
            handshakes_begun: register(&self.registry, handshakes_begun)?,
            handshakes_completed: register(&self.registry, handshakes_completed)?,
            client_certs_rejected: register(&self.registry, client_certs_rejected)?,
        })
    }

    /// Counts one answered request (`route` = route index, `None` = no route).
    pub(crate) fn request(&self, route: Option<usize>, method: &str, status: u16, seconds: f64) {
        let r = self.route(route);
        r.request_duration.observe(seconds);
        let status = usize::from(status).min(STATUSES - 1);
        let m = method_index(method);
        r.requests[m * STATUSES + status]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[&r.name, METHODS[m], &status.to_string()])
            })
            .inc();
    }

    /// Counts a refusal by reason.
    pub(crate) fn denied(&self, route: Option<usize>, reason: Reason) {
        let r = self.route(route);
        r.denied[reason.index()]
            .get_or_init(|| self.denied.with_label_values(&[&r.name, reason.as_str()]))
            .inc();
    }

    /// Counts a rate-limit refusal (`partner` empty for non-partner principals).
    pub(crate) fn rate_limited(&self, limit: &str, partner: &str) {
        self.rate_limited.with_label_values(&[limit, partner]).inc();
    }

    /// Observes upstream time to response head.
    pub(crate) fn upstream(&self, route: Option<usize>, seconds: f64) {
        if let Some(h) = &self.route(route).upstream_duration {
            h.observe(seconds);
        }
    }

    /// The health gauge of one backend (`backend` is its configured `host:port`), set to
    /// 1: a backend is eligible until its health check says otherwise.
    pub(crate) fn backend_health(&self, upstream: &str, backend: &str) -> IntGauge {
        let g = self.backend_healthy.with_label_values(&[upstream, backend]);
        g.set(1);
        g
    }

    /// Counts a reload and records whether it was the latest to succeed.
    pub(crate) fn reload(&self, success: bool) {
        self.state
            .reloads
            .with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
        self.state.last_reload_ok.set(i64::from(success));
    }

    /// Counts a JWKS URL fetch.
    pub(crate) fn jwks_fetch(&self, success: bool) {
        self.state
            .jwks_fetches
            .with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
    }

    /// Counts a fetched JWKS key ignored because a pinned key has its kid.
    pub(crate) fn jwks_key_ignored(&self) {
        self.state.jwks_keys_ignored.inc();
    }

    /// Sets the partner gauge.
    pub(crate) fn set_partners(&self, n: usize) {
        self.state.partners.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the learned-org gauge.
    pub(crate) fn set_learned_orgs(&self, n: usize) {
        self.state.learned_orgs.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Declares the validation series of a spec route (one per location, at 0), so a
    /// dashboard sees them before the first failure.
    pub(crate) fn declare_validation(&self, route: &str) {
        for location in crate::openapi::Location::ALL {
            self.validation.with_label_values(&[route, location.label()]);
        }
    }

    /// Counts a request that failed step 7a at `location` (once per request and location).
    pub(crate) fn validation_failure(&self, route: Option<usize>, location: crate::openapi::Location) {
        let r = self.route(route);
        self.validation.with_label_values(&[&r.name, location.label()]).inc();
    }

    /// Handles on the Redis metrics, when `[redis]` is configured.
    /// The connection-close counters, for the listeners.
    pub(crate) fn connections_closed(&self) -> ConnectionsClosed {
        self.connections_closed.clone()
    }

    pub(crate) fn redis(&self) -> Option<RedisMetrics> {
        self.redis.clone()
    }

    /// `authgate_learned_orgs_journal_failures_total`, for the writer's callback.
    pub(crate) fn journal_failures(&self) -> IntCounter {
        self.state.journal_failures.clone()
    }

    /// The counter of writes `file` did not take, for the writer that owns it.
    pub(crate) fn state_write_failures(&self, file: StateFile) -> IntCounter {
        self.state.state_write_failures.with_label_values(&[file.as_str()])
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_counts_under_its_own_labels() {
        let registry = Registry::new();
        let closed = ConnectionsClosed::register(&registry).unwrap();
        closed.count(Listener::Admin, CloseReason::Evicted);
        closed.count(Listener::Proxy, CloseReason::HeadTooLarge);
        closed.count(Listener::Proxy, CloseReason::HeadTooLarge);
        let families = registry.gather();
        let series = &families[0].get_metric();
        assert_eq!(series.len(), Listener::ALL.len() * CloseReason::ALL.len());
        let value = |listener: &str, reason: &str| {
            series
                .iter()
                .find(|m| {
                    let l = m.get_label();
                    l.iter().any(|p| p.name() == "listener" && p.value() == listener)
                        && l.iter().any(|p| p.name() == "reason" && p.value() == reason)
                })
                .map(|m| m.get_counter().get_value())
        };
        assert_eq!(value("admin", "evicted"), Some(1.0));
        assert_eq!(value("proxy", "head_too_large"), Some(2.0));
        assert_eq!(value("proxy", "evicted"), Some(0.0));
    }

    #[test]
    fn renders_contract_names_and_labels() {
        let m = Metrics::new([("orgs", "partner-api"), ("health", "default")], true).unwrap();
        m.backend_health("partner-api", "10.0.0.11:3000").set(0);
        m.backend_health("partner-api", "10.0.0.12:3000");
        m.request(Some(0), "GET", 200, 0.001);
        m.request(None, "BREW", 404, 0.0001);
        m.denied(None, Reason::NoRoute);
        m.denied(Some(0), Reason::RateLimited);
        m.rate_limited("partner", "acme");
        m.upstream(Some(0), 0.0005);
        m.reload(true);
        m.set_partners(3);
        let text = m.render();
        for needle in [
            r#"authgate_requests_total{method="GET",route="orgs",status="200"} 1"#,
            r#"authgate_requests_total{method="other",route="none",status="404"} 1"#,
            r#"authgate_denied_total{reason="no_route",route="none"} 1"#,
            r#"authgate_rate_limited_total{limit="partner",partner="acme"} 1"#,
            r#"authgate_config_reloads_total{result="success"} 1"#,
            r#"authgate_config_reloads_total{result="failure"} 0"#,
            "authgate_config_last_reload_successful 1",
            "authgate_partners 3",
            r#"authgate_request_duration_seconds_bucket{route="orgs",le="0.00005"}"#,
            r#"authgate_upstream_duration_seconds_count{route="orgs",upstream="partner-api"} 1"#,
            r#"authgate_upstream_duration_seconds_count{route="health",upstream="default"} 0"#,
            r#"authgate_upstream_backend_healthy{backend="10.0.0.11:3000",upstream="partner-api"} 0"#,
            r#"authgate_upstream_backend_healthy{backend="10.0.0.12:3000",upstream="partner-api"} 1"#,
            "# TYPE authgate_upstream_backend_healthy gauge",
            "# TYPE authgate_request_duration_seconds histogram",
            "authgate_redis_up 0",
            r#"authgate_redis_errors_total{kind="bad_value",op="limit"} 0"#,
            r#"authgate_redis_errors_total{kind="timeout",op="announce"} 0"#,
            r#"authgate_state_write_failures_total{file="revocations"} 0"#,
            r#"authgate_state_write_failures_total{file="learned_orgs"} 0"#,
            "# TYPE authgate_redis_duration_seconds histogram",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains(r#"route="none",upstream"#), "{text}");
    }

    #[test]
    fn the_label_sets_list_every_variant() {
        // exhaustive matches: a variant added without its ALL entry fails to compile here
        for kind in RedisErrorKind::ALL {
            let i = match kind {
                RedisErrorKind::Timeout => 0,
                RedisErrorKind::Connection => 1,
                RedisErrorKind::ReadOnly => 2,
                RedisErrorKind::Loading => 3,
                RedisErrorKind::MasterDown => 4,
                RedisErrorKind::Oom => 5,
                RedisErrorKind::UnexpectedReply => 6,
                RedisErrorKind::Error => 7,
                RedisErrorKind::BadValue => 8,
            };
            assert_eq!(RedisErrorKind::ALL[i], kind);
        }
        for file in StateFile::ALL {
            let i = match file {
                StateFile::Revocations => 0,
                StateFile::LearnedOrgs => 1,
            };
            assert_eq!(StateFile::ALL[i], file);
        }
    }

    #[test]
    fn methods_are_normalised() {
        assert_eq!(METHODS[method_index("PATCH")], "PATCH");
        assert_eq!(METHODS[method_index("get")], "other");
        assert_eq!(METHODS[method_index("PROPFIND")], "other");
    }
}
