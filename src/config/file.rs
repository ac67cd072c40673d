//! The gateway config file as written (`config/authgate.toml`): serde structs only.
//!
//! Every table denies unknown keys. Values that need checking beyond their TOML type are
//! `Spanned`, so validation can name the line (see `validate.rs`).

use serde::Deserialize;
use toml::Spanned;

/// `authgate.toml` as parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayFile {
    pub(crate) server: ServerFile,
    /// The one-backend form: the cluster named `default`.
    pub(crate) upstream: Option<Spanned<UpstreamFile>>,
    /// `[[upstreams]]`: named clusters (docs/reference.md#upstream-clusters).
    #[serde(default)]
    pub(crate) upstreams: Vec<Spanned<ClusterFile>>,
    #[serde(default)]
    pub(crate) client_ip: ClientIpFile,
    #[serde(default)]
    pub(crate) jwt: JwtFile,
    pub(crate) policies: PoliciesFile,
    #[serde(default)]
    pub(crate) limits: Vec<LimitFile>,
    #[serde(default)]
    pub(crate) routes: Vec<Spanned<RouteFile>>,
    /// `[[openapi]]`: routes compiled from the upstream's spec (docs/reference.md#openapi).
    #[serde(default)]
    pub(crate) openapi: Vec<Spanned<OpenApiFile>>,
    pub(crate) redis: Option<Spanned<RedisFile>>,
}

/// `[[openapi]]`: one upstream spec whose operations become routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenApiFile {
    /// The spec file (OpenAPI 3.1, YAML or JSON), relative to the config file.
    pub(crate) spec: Spanned<String>,
    /// Prepended to every path of the spec (default none).
    pub(crate) prefix: Option<Spanned<String>>,
    /// The cluster of its operations (default `"default"`); a route key may override it.
    pub(crate) upstream: Option<Spanned<String>>,
    /// `"enforce"` (default), `"report"` or `"off"`.
    pub(crate) validate: Option<Spanned<String>>,
    /// The largest body its operations hold and check (default `"64KiB"`, the most pingora
    /// forwards after reading it).
    pub(crate) held_body_max: Option<Spanned<String>>,
    /// Route keys for every operation (an operation's `x-authgate` and the overlay win).
    pub(crate) defaults: Option<Spanned<RouteKeysFile>>,
    /// `[[openapi.operations]]`: route keys by `operationId`, over the spec's.
    #[serde(default)]
    pub(crate) operations: Vec<Spanned<OperationFile>>,
}

/// The route keys a spec operation takes from `defaults`, its `x-authgate` object or an
/// overlay (the keys of a `[[routes]]` entry that are not about matching).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteKeysFile {
    pub(crate) auth: Option<String>,
    pub(crate) limits: Option<Vec<String>>,
    pub(crate) org_param: Option<String>,
    pub(crate) learn_org_from_response: Option<String>,
    pub(crate) read_timeout: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) websocket: Option<bool>,
    pub(crate) error_format: Option<String>,
    pub(crate) api_key_header: Option<String>,
    pub(crate) api_key_prefix: Option<String>,
    /// Only `"off"`: the operation is routed, not validated (so a media type the gateway
    /// cannot check may carry a schema).
    pub(crate) validate: Option<String>,
    /// Its `pattern`s may need a backtracking engine, run on a per-request budget.
    pub(crate) allow_backtracking_patterns: Option<bool>,
}

/// `[[openapi.operations]]`: the overlay of one operation, by `operationId`, so the spec
/// stays the upstream team's file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperationFile {
    /// The `operationId` it applies to (it must exist in the spec).
    pub(crate) id: Spanned<String>,
    pub(crate) auth: Option<String>,
    pub(crate) limits: Option<Vec<String>>,
    pub(crate) org_param: Option<String>,
    pub(crate) learn_org_from_response: Option<String>,
    pub(crate) read_timeout: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) websocket: Option<bool>,
    pub(crate) error_format: Option<String>,
    pub(crate) api_key_header: Option<String>,
    pub(crate) api_key_prefix: Option<String>,
    /// As in `defaults`: only `"off"`.
    pub(crate) validate: Option<String>,
    /// As in `defaults`.
    pub(crate) allow_backtracking_patterns: Option<bool>,
}

/// `[redis]` (docs/reference.md#redis).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisFile {
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) url_env: Option<Spanned<String>>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) on_error: Option<Spanned<String>>,
    /// How old the revocation view may get before it is stale (docs/reference.md#redis).
    pub(crate) revocations_max_age: Option<Spanned<String>>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    pub(crate) listen: Spanned<String>,
    pub(crate) admin_listen: Option<Spanned<String>>,
    pub(crate) threads: Option<usize>,
    /// How this replica names itself in Redis and to `authgate revoke` (default hostname-pid).
    pub(crate) instance_id: Option<Spanned<String>>,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) shutdown_grace: Option<Spanned<String>>,
    /// `error`, `warn`, `info` (default), `debug`, `trace`.
    pub(crate) log_level: Option<Spanned<String>>,
    /// `json` (default) or `text`.
    pub(crate) log_format: Option<Spanned<String>>,
    /// One access-log line per request (default true).
    pub(crate) access_log: Option<bool>,
    /// `drop` (default) or `allow`: other request headers with `_` in their name.
    pub(crate) underscore_headers: Option<Spanned<String>>,
    /// `[server.tls]`: the proxy listener speaks TLS (docs/reference.md#servertls).
    pub(crate) tls: Option<Spanned<TlsFile>>,
    /// `;` path parameters allowed (default false: 400 `bad_path`).
    pub(crate) allow_path_semicolons: Option<bool>,
    /// Longest wait for a complete request head, on both listeners (default `"10s"`).
    pub(crate) header_timeout: Option<Spanned<String>>,
    /// Connections the admin listener holds at most (default 64).
    pub(crate) admin_max_connections: Option<Spanned<i64>>,
    /// Longest a held body may take to arrive, and longest gap between two reads of a
    /// streamed body (default `"10s"`).
    pub(crate) body_timeout: Option<Spanned<String>>,
    /// Longest a client may accept no response bytes (default `"30s"`).
    pub(crate) send_timeout: Option<Spanned<String>>,
    /// Largest request head, as bytes or `"64KiB"` (default `"64KiB"`).
    pub(crate) max_head_bytes: Option<Spanned<toml::Value>>,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    /// PEM certificate chain, leaf first.
    pub(crate) cert_file: Spanned<String>,
    /// PEM private key of the leaf.
    pub(crate) key_file: Spanned<String>,
    /// PEM CA certificate(s) a client certificate must chain to (Authenticated Origin Pulls).
    pub(crate) client_ca_file: Option<Spanned<String>>,
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    pub(crate) address: Spanned<String>,
    #[serde(default)]
    pub(crate) tls: bool,
    pub(crate) sni: Option<String>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) read_timeout: Option<Spanned<String>>,
}

/// `[[upstreams]]`: one named cluster of backends (docs/reference.md#upstream-clusters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterFile {
    pub(crate) name: Spanned<String>,
    pub(crate) backends: Spanned<Vec<Spanned<String>>>,
    /// `round_robin` (default), `least_conn` or `consistent_hash`.
    pub(crate) selection: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) tls: bool,
    pub(crate) sni: Option<String>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) read_timeout: Option<Spanned<String>>,
    pub(crate) health_check: Option<Spanned<HealthCheckFile>>,
}

/// `health_check = { ... }` of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckFile {
    pub(crate) path: Spanned<String>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) unhealthy_after: Option<Spanned<i64>>,
    pub(crate) healthy_after: Option<Spanned<i64>>,
}

/// `[client_ip]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientIpFile {
    pub(crate) source: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<Spanned<String>>,
}

/// `aud` may be written as one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[jwt]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtFile {
    pub(crate) algorithms: Option<Vec<Spanned<String>>>,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<OneOrMany>,
    pub(crate) leeway: Option<Spanned<String>>,
    pub(crate) require_exp: Option<bool>,
    pub(crate) partner_claim: Option<String>,
    pub(crate) org_claim: Option<String>,
    pub(crate) key_id_claim: Option<String>,
    pub(crate) org_must_be_listed: Option<bool>,
    /// A token without `key_id_claim` is invalid (default false).
    pub(crate) require_key_id: Option<bool>,
    #[serde(default)]
    pub(crate) keys: Vec<Spanned<KeyFile>>,
    pub(crate) jwks: Option<Spanned<JwksFile>>,
}

/// `[[jwt.keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub(crate) kid: Spanned<String>,
    pub(crate) algorithm: Spanned<String>,
    pub(crate) secret_env: Option<String>,
    pub(crate) secret_file: Option<String>,
    pub(crate) public_key_file: Option<String>,
    pub(crate) private_key_file: Option<String>,
}

/// `[jwt.jwks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwksFile {
    pub(crate) file: Option<String>,
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) refresh: Option<Spanned<String>>,
}

/// `[policies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoliciesFile {
    pub(crate) file: Spanned<String>,
    pub(crate) learned_orgs_file: Option<String>,
}

/// `[[limits]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitFile {
    pub(crate) name: Spanned<String>,
    pub(crate) per_minute: Spanned<i64>,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    pub(crate) name: Spanned<String>,
    pub(crate) path: Spanned<String>,
    pub(crate) method: Option<Spanned<String>>,
    pub(crate) auth: Spanned<String>,
    pub(crate) org_param: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) limits: Vec<Spanned<String>>,
    pub(crate) learn_org_from_response: Option<Spanned<String>>,
    pub(crate) api_key_header: Option<Spanned<String>>,
    pub(crate) api_key_prefix: Option<String>,
    pub(crate) error_format: Option<Spanned<String>>,
    /// The cluster this route forwards to (default `"default"`).
    pub(crate) upstream: Option<Spanned<String>>,
    /// Overrides the cluster's `read_timeout` (streaming routes).
    pub(crate) read_timeout: Option<Spanned<String>>,
    /// Forward `Upgrade` (WebSocket) and honour a 101 on this route (default false).
    pub(crate) websocket: Option<bool>,
}

/// The policy file (`partners.toml`) as parsed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    #[serde(default)]
    pub(crate) partner: Vec<Spanned<PartnerFile>>,
    #[serde(default)]
    pub(crate) org: Vec<Spanned<OrgFile>>,
    #[serde(default)]
    pub(crate) api_key: Vec<Spanned<ApiKeyFile>>,
}

/// `[[partner]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartnerFile {
    pub(crate) id: Spanned<String>,
    #[serde(default = "yes")]
    pub(crate) active: bool,
    pub(crate) ip_allow_list: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(crate) revoked_keys: Vec<String>,
    #[serde(default)]
    pub(crate) orgs: Vec<String>,
    pub(crate) limits: Option<Spanned<std::collections::BTreeMap<String, Spanned<i64>>>>,
}

/// `[[org]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrgFile {
    pub(crate) id: Spanned<String>,
    #[serde(default)]
    pub(crate) revoked_keys: Vec<String>,
    pub(crate) ip_allow_list: Option<Vec<Spanned<String>>>,
    #[serde(default = "yes")]
    pub(crate) active: bool,
}

/// `[[api_key]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeyFile {
    pub(crate) id: Spanned<String>,
    pub(crate) org: Spanned<String>,
    pub(crate) sha256: Spanned<String>,
    #[serde(default)]
    pub(crate) disabled: bool,
}

fn yes() -> bool {
    true
}
