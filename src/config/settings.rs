//! Validated gateway settings: what `authgate.toml` means once every value is checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::policy::pipeline::StaticPolicy;
use crate::policy::rate_limit::LimitDef;
use crate::policy::upstream_headers::UnderscoreHeaders;

/// Where a configured key's material comes from (re-read on every reload, except env).
#[derive(Debug, Clone)]
pub(crate) enum KeyMaterial {
    SecretEnv(String),
    SecretFile(PathBuf),
    PublicKeyFile(PathBuf),
}

/// One `[[jwt.keys]]` entry, validated.
#[derive(Debug, Clone)]
pub(crate) struct KeySource {
    pub(crate) kid: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) material: KeyMaterial,
    /// Only `authgate token` reads it.
    pub(crate) private_key_file: Option<PathBuf>,
    /// Line of the entry in the config file (for problems found when loading the key).
    pub(crate) line: usize,
}

/// `[jwt.jwks]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct JwksSettings {
    pub(crate) file: Option<PathBuf>,
    pub(crate) url: Option<String>,
    pub(crate) refresh: Duration,
}

/// How a cluster picks the backend for a request (`selection`, docs/reference.md#upstream-clusters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Each backend in turn.
    RoundRobin,
    /// The backend with the fewest requests in flight through this gateway.
    LeastConn,
    /// Ketama consistent hashing of the client IP: one client keeps its backend.
    ConsistentHash,
}

/// A cluster's `health_check`, validated.
#[derive(Debug, Clone)]
pub(crate) struct HealthCheckSettings {
    /// Request path of the `GET` probe; a 2xx answer passes.
    pub(crate) path: String,
    pub(crate) interval: Duration,
    /// Bound on each step of one probe (connect, write, read).
    pub(crate) timeout: Duration,
    /// Consecutive failures that take a backend out.
    pub(crate) unhealthy_after: usize,
    /// Consecutive passes that bring it back.
    pub(crate) healthy_after: usize,
}

/// One backend of a cluster.
#[derive(Debug, Clone)]
pub(crate) struct BackendSettings {
    /// `host:port` as configured: the `backend` metric label and what log lines name.
    pub(crate) address: String,
    /// Line in the config file (for problems found when resolving it).
    pub(crate) line: usize,
    /// The address connected to. Validation fills it for `IP:port`; [`crate::config::load`]
    /// resolves host names (once: a restart re-resolves). `None` only before that.
    pub(crate) addr: Option<SocketAddr>,
}

/// One upstream cluster (`[[upstreams]]`, or `[upstream]` as the cluster `default`).
/// Fixed for the life of the process (SIGHUP does not change clusters).
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    /// The name routes use, and the `upstream` metric label.
    pub(crate) name: Arc<str>,
    pub(crate) backends: Vec<BackendSettings>,
    pub(crate) selection: Selection,
    pub(crate) tls: bool,
    pub(crate) sni: String,
    pub(crate) connect_timeout: Duration,
    /// Longest wait for the response head and between two body reads.
    pub(crate) read_timeout: Duration,
    /// `None`: every backend is always eligible.
    pub(crate) health_check: Option<HealthCheckSettings>,
}

/// Where a route forwards: its cluster and its own `read_timeout`, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteUpstream {
    /// Index into [`Settings::upstreams`].
    pub(crate) cluster: usize,
    /// Overrides the cluster's `read_timeout` (a streaming route waits minutes).
    pub(crate) read_timeout: Option<Duration>,
    /// `websocket = true`: the route forwards a WebSocket upgrade and may answer 101;
    /// elsewhere `Upgrade` is removed and a 101 is a 502 (docs/reference.md#routes).
    pub(crate) websocket: bool,
}

/// `[redis] on_error`: what a request that needs shared state gets while Redis is
/// unreachable or slower than `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    /// Per-replica limits and local org knowledge (availability first).
    Local,
    /// 503 `shared_state_unavailable` (exact limits first).
    Deny,
}

/// `[redis]`, validated (docs/reference.md#redis).
#[derive(Clone)]
pub(crate) struct RedisSettings {
    /// `redis://` or `rediss://` URL (may carry credentials: never logged).
    pub(crate) url: String,
    pub(crate) key_prefix: String,
    /// Per command.
    pub(crate) timeout: Duration,
    pub(crate) on_error: OnError,
    /// How old the revocation view may be while the subscription is not known live
    /// (docs/reference.md#redis); past it the view is stale.
    pub(crate) revocations_max_age: Duration,
    /// `[server] instance_id`: this replica's name in its announcements.
    pub(crate) instance_id: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("revocations_max_age", &self.revocations_max_age)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

/// The URL with any password replaced by `***`, for logs and messages.
pub(crate) fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// `[server.tls]`, validated: the files (re-read on every reload) and where the config names
/// them, so a bad file is reported at its config line.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) cert_file: PathBuf,
    pub(crate) cert_line: usize,
    pub(crate) key_file: PathBuf,
    pub(crate) key_line: usize,
    /// With it, a client certificate signed by one of these CAs is required at the handshake.
    pub(crate) client_ca_file: Option<(PathBuf, usize)>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The `[server]` deadlines and bounds that keep a slow or greedy client from holding a
/// connection (docs/reference.md#server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// A request head must be complete this long after the accept or the previous response.
    pub(crate) header_timeout: Duration,
    /// A held body must have arrived this long after the head; a streamed body may pause
    /// this long between two reads.
    pub(crate) body_timeout: Duration,
    /// A client may accept no response bytes for this long.
    pub(crate) send_timeout: Duration,
    /// The largest request head, in bytes.
    pub(crate) max_head_bytes: u64,
    /// The admin listener's connection bound.
    pub(crate) admin_max_connections: usize,
}

/// Everything in `authgate.toml`, validated. Immutable for the life of the process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file (absolute).
    pub(crate) config_path: PathBuf,
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    /// Worker threads (0 in the file = number of cores, resolved here).
    pub(crate) threads: usize,
    pub(crate) shutdown_grace: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub(crate) access_log: bool,
    /// `[server] underscore_headers` (docs/reference.md#upstream-request).
    pub(crate) underscore_headers: UnderscoreHeaders,
    /// `[server.tls]`: TLS on the proxy listener (absent = plain HTTP).
    pub(crate) tls: Option<TlsFiles>,
    /// `[server] header_timeout`, `body_timeout`, `send_timeout`, `max_head_bytes`,
    /// `admin_max_connections`.
    pub(crate) deadlines: Deadlines,
    /// Upstream clusters in config order (`[upstream]` first, as `default`).
    pub(crate) upstreams: Vec<ClusterSettings>,
    /// Per route, by route index: its cluster and read timeout.
    pub(crate) route_upstreams: Vec<RouteUpstream>,
    /// Routes, client-IP rules, `[jwt]` checks, body limit.
    pub fixed: StaticPolicy,
    pub limits: Vec<LimitDef>,
    pub(crate) keys: Vec<KeySource>,
    pub(crate) jwks: Option<JwksSettings>,
    pub(crate) policy_file: PathBuf,
    pub(crate) learned_orgs_file: PathBuf,
    /// `[redis]`; `None` = the embedded default (one process, nothing else to run).
    pub(crate) redis: Option<RedisSettings>,
}

impl Settings {
    /// The cluster a route forwards to (the first cluster for an index out of range,
    /// which a validated config never has).
    pub(crate) fn route_upstream(&self, route: usize) -> RouteUpstream {
        self.route_upstreams.get(route).copied().unwrap_or(RouteUpstream {
            cluster: 0,
            read_timeout: None,
            websocket: false,
        })
    }

    /// `[[openapi]] held_body_max` of the spec that holds route `route`: the largest body
    /// step 7a holds and checks there (`None` for a `[[routes]]` entry). Over it, the proxy
    /// answers 413 under `validate = "enforce"` and, under `"report"`, forwards the body
    /// unchecked and records `Location::BodyNotChecked`.
    pub fn held_body_max(&self, route: usize) -> Option<u64> {
        self.fixed
            .routes
            .specs()
            .iter()
            .find(|s| s.holds(route))
            .map(|s| s.held_body_max())
    }

    /// The local state file of shared revocations, beside the learned-orgs journal
    /// (`partners.toml.orgs.jsonl` -> `partners.toml.revocations.jsonl`).
    pub(crate) fn revocations_file(&self) -> PathBuf {
        let journal = self.learned_orgs_file.to_string_lossy();
        match journal.strip_suffix(".orgs.jsonl") {
            Some(stem) => PathBuf::from(format!("{stem}.revocations.jsonl")),
            None => PathBuf::from(format!("{journal}.revocations.jsonl")),
        }
    }
}
