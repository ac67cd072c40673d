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
pub enum KeyMaterial {
    SecretEnv(String),
    SecretFile(PathBuf),
    PublicKeyFile(PathBuf),
}

/// One `[[jwt.keys]]` entry, validated.
#[derive(Debug, Clone)]
pub struct KeySource {
    pub kid: String,
    pub algorithm: Algorithm,
    pub material: KeyMaterial,
    /// Only `authgate token` reads it.
    pub private_key_file: Option<PathBuf>,
    /// Line of the entry in the config file (for problems found when loading the key).
    pub line: usize,
}

/// `[jwt.jwks]`, validated.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub file: Option<PathBuf>,
    pub url: Option<String>,
    pub refresh: Duration,
}

/// `[upstream]`, validated.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `host:port` as configured (pingora resolves it when connecting).
    pub address: String,
    pub tls: bool,
    pub sni: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
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
    pub config_path: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Worker threads (0 in the file = number of cores, resolved here).
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub access_log: bool,
    /// `[server] underscore_headers` (CONTRACT §6).
    pub underscore_headers: UnderscoreHeaders,
    pub upstream: UpstreamSettings,
    /// Routes, client-IP rules, `[jwt]` checks, body limit.
    pub fixed: StaticPolicy,
    pub limits: Vec<LimitDef>,
    pub keys: Vec<KeySource>,
    pub jwks: Option<JwksSettings>,
    pub policy_file: PathBuf,
    pub learned_orgs_file: PathBuf,
}
