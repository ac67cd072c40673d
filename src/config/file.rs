//! The gateway config file as written (`config/authgate.toml`): serde structs only.
//!
//! Every table denies unknown keys. Values that need checking beyond their TOML type are
//! `Spanned`, so validation can name the line (see `validate.rs`).

use serde::Deserialize;
use toml::Spanned;

/// `authgate.toml` as parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub server: ServerFile,
    pub upstream: UpstreamFile,
    #[serde(default)]
    pub client_ip: ClientIpFile,
    #[serde(default)]
    pub jwt: JwtFile,
    pub policies: PoliciesFile,
    #[serde(default)]
    pub limits: Vec<LimitFile>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteFile>>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Spanned<String>,
    pub admin_listen: Option<Spanned<String>>,
    pub threads: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub shutdown_grace: Option<Spanned<String>>,
    /// `error`, `warn`, `info` (default), `debug`, `trace`.
    pub log_level: Option<Spanned<String>>,
    /// `json` (default) or `text`.
    pub log_format: Option<Spanned<String>>,
    /// One access-log line per request (default true).
    pub access_log: Option<bool>,
    /// `drop` (default) or `allow`: other request headers with `_` in their name.
    pub underscore_headers: Option<Spanned<String>>,
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub address: Spanned<String>,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<String>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
}

/// `[client_ip]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpFile {
    pub source: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
}

/// `aud` may be written as one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[jwt]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    pub algorithms: Option<Vec<Spanned<String>>>,
    pub issuer: Option<String>,
    pub audience: Option<OneOrMany>,
    pub leeway: Option<Spanned<String>>,
    pub require_exp: Option<bool>,
    pub partner_claim: Option<String>,
    pub org_claim: Option<String>,
    pub key_id_claim: Option<String>,
    pub org_must_be_listed: Option<bool>,
    #[serde(default)]
    pub keys: Vec<Spanned<KeyFile>>,
    pub jwks: Option<Spanned<JwksFile>>,
}

/// `[[jwt.keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub kid: Spanned<String>,
    pub algorithm: Spanned<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub public_key_file: Option<String>,
    pub private_key_file: Option<String>,
}

/// `[jwt.jwks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksFile {
    pub file: Option<String>,
    pub url: Option<Spanned<String>>,
    pub refresh: Option<Spanned<String>>,
}

/// `[policies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesFile {
    pub file: Spanned<String>,
    pub learned_orgs_file: Option<String>,
}

/// `[[limits]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitFile {
    pub name: Spanned<String>,
    pub per_minute: Spanned<i64>,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    pub method: Option<Spanned<String>>,
    pub auth: Spanned<String>,
    pub org_param: Option<Spanned<String>>,
    #[serde(default)]
    pub limits: Vec<Spanned<String>>,
    pub learn_org_from_response: Option<Spanned<String>>,
    pub api_key_header: Option<Spanned<String>>,
    pub api_key_prefix: Option<String>,
    pub error_format: Option<Spanned<String>>,
}

/// The policy file (`partners.toml`) as parsed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub partner: Vec<Spanned<PartnerFile>>,
    #[serde(default)]
    pub org: Vec<Spanned<OrgFile>>,
    #[serde(default)]
    pub api_key: Vec<Spanned<ApiKeyFile>>,
}

/// `[[partner]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerFile {
    pub id: Spanned<String>,
    #[serde(default = "yes")]
    pub active: bool,
    pub ip_allow_list: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub revoked_keys: Vec<String>,
    #[serde(default)]
    pub orgs: Vec<String>,
    pub limits: Option<Spanned<std::collections::BTreeMap<String, Spanned<i64>>>>,
}

/// `[[org]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgFile {
    pub id: Spanned<String>,
    #[serde(default)]
    pub revoked_keys: Vec<String>,
    pub ip_allow_list: Option<Vec<Spanned<String>>>,
    #[serde(default = "yes")]
    pub active: bool,
}

/// `[[api_key]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyFile {
    pub id: Spanned<String>,
    pub org: Spanned<String>,
    pub sha256: Spanned<String>,
    #[serde(default)]
    pub disabled: bool,
}

fn yes() -> bool {
    true
}
