//! Validated gateway settings: what `authgate.toml` means once every value is checked.

use std::net::SocketAddr;
use std::path::PathBuf;
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

/// `[upstream]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamSettings {
    /// `host:port` as configured (pingora resolves it when connecting).
    pub(crate) address: String,
    pub(crate) tls: bool,
    pub(crate) sni: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
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
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
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
    pub(crate) upstream: UpstreamSettings,
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
