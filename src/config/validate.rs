//! `authgate.toml` (file structs) -> [`Settings`], collecting every problem with its line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::file::{ClusterFile, GatewayFile, HealthCheckFile, OneOrMany, RedisFile, RouteFile};
use super::problem::Reporter;
use super::settings::{
    BackendSettings, ClusterSettings, HealthCheckSettings, JwksSettings, KeyMaterial, KeySource, LogFormat, OnError,
    RedisSettings, RouteUpstream, Selection, Settings, TlsFiles,
};
use crate::policy::client_ip::{ClientIpPolicy, IpSource};
use crate::policy::cloudflare;
use crate::policy::ip_set::{parse_net, IpSet};
use crate::policy::jwt::JwtPolicy;
use crate::policy::pipeline::StaticPolicy;
use crate::policy::rate_limit::LimitDef;
use crate::policy::routes::{ApiKeySettings, AuthKind, ErrorFormat, Pattern, Route, RouteTable};
use crate::policy::upstream_headers::UnderscoreHeaders;

mod openapi;

/// Default values (docs/reference.md#configuration).
pub(crate) mod defaults {
    pub(crate) const ADMIN_LISTEN: &str = "127.0.0.1:9090";
    pub(crate) const MAX_BODY_BYTES: u64 = 1_048_576;
    pub(crate) const SHUTDOWN_GRACE: &str = "10s";
    pub(crate) const CONNECT_TIMEOUT: &str = "2s";
    pub(crate) const READ_TIMEOUT: &str = "30s";
    pub(crate) const LEEWAY: &str = "30s";
    pub(crate) const JWKS_REFRESH: &str = "5m";
    pub(crate) const ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];
    pub(crate) const API_KEY_HEADER: &str = "X-API-Key";
    pub(crate) const REDIS_TIMEOUT: &str = "50ms";
    pub(crate) const REDIS_KEY_PREFIX: &str = "authgate:";
    pub(crate) const REVOCATIONS_MAX_AGE: &str = "5s";
    /// The cluster `[upstream]` defines and routes use unless they name another.
    pub(crate) const CLUSTER: &str = "default";
    pub(crate) const HEALTH_INTERVAL: &str = "5s";
    pub(crate) const HEALTH_TIMEOUT: &str = "1s";
    pub(crate) const HEALTH_THRESHOLD: i64 = 2;
    pub(crate) const HEADER_TIMEOUT: &str = "10s";
    pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;
}

/// Parses a duration with a unit (`ms`, `s`, `m`, `h`; combinations like `1m30s` allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let has_unit = t.ends_with("ms") || t.ends_with('s') || t.ends_with('m') || t.ends_with('h');
    if !has_unit || !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a duration with a unit (ms, s, m, h), e.g. \"10s\""
        ));
    }
    humantime::parse_duration(t).map_err(|e| format!("{text:?} is not a duration: {e}"))
}

struct Ctx<'a, 'r> {
    r: &'r mut Reporter<'a>,
    dir: PathBuf,
}

impl Ctx<'_, '_> {
    fn duration(&mut self, v: &Option<Spanned<String>>, default: &str, field: &str) -> Duration {
        match v {
            None => parse_duration(default).unwrap_or_default(),
            Some(s) => match parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.r.at(s.span(), format!("{field}: {e}"));
                    Duration::ZERO
                }
            },
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        resolve(&self.dir, rel)
    }
}

/// A path from a config file, relative to that file's directory.
pub(crate) fn resolve(dir: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn socket_addr(r: &mut Reporter<'_>, v: &Spanned<String>, field: &str) -> SocketAddr {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            r.at(
                v.span(),
                format!("{field}: {:?} is not an IP:port address", v.get_ref()),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

/// Validates the parsed gateway file. `config_path` must be absolute.
pub(crate) fn settings(file: &GatewayFile, config_path: &Path, r: &mut Reporter<'_>) -> Settings {
    let dir = config_path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut c = Ctx { r, dir };

    // [server]
    let s = &file.server;
    let listen = socket_addr(c.r, &s.listen, "server.listen");
    let admin_listen = match &s.admin_listen {
        Some(a) => socket_addr(c.r, a, "server.admin_listen"),
        None => defaults::ADMIN_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let threads = match s.threads.unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let shutdown_grace = c.duration(&s.shutdown_grace, defaults::SHUTDOWN_GRACE, "server.shutdown_grace");
    let log_level = match &s.log_level {
        None => "info".to_string(),
        Some(l) => {
            let v = l.get_ref().to_ascii_lowercase();
            if !["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
                c.r.at(
                    l.span(),
                    format!(
                        "server.log_level: {:?} is not one of error, warn, info, debug, trace",
                        l.get_ref()
                    ),
                );
            }
            v
        }
    };
    let log_format = match s.log_format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("json", _)) => LogFormat::Json,
        Some(("text", _)) => LogFormat::Text,
        Some((other, span)) => {
            c.r.at(
                span,
                format!("server.log_format: {other:?} is not \"json\" or \"text\""),
            );
            LogFormat::Json
        }
    };

    let underscore_headers = match s.underscore_headers.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("drop", _)) => UnderscoreHeaders::Drop,
        Some(("allow", _)) => UnderscoreHeaders::Allow,
        Some((other, span)) => {
            c.r.at(
                span,
                format!("server.underscore_headers: {other:?} is not \"drop\" or \"allow\""),
            );
            UnderscoreHeaders::Drop
        }
    };

    let tls = s.tls.as_ref().map(|t| server_tls(&mut c, t));
    let (header_timeout, admin_max_connections) = deadlines(&mut c, s);

    // [upstream] and [[upstreams]]
    let upstreams = clusters(&mut c, file);

    // [client_ip]
    let source = match file.client_ip.source.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("x-forwarded-for", _)) => IpSource::XForwardedFor,
        Some(("cf-connecting-ip", _)) => IpSource::CfConnectingIp,
        Some(("peer", _)) => IpSource::Peer,
        Some((other, span)) => {
            c.r.at(
                span,
                format!("client_ip.source: {other:?} is not \"x-forwarded-for\", \"cf-connecting-ip\" or \"peer\""),
            );
            IpSource::Peer
        }
    };
    let trusted = trusted_proxies(c.r, &file.client_ip.trusted_proxies);
    let client_ip = ClientIpPolicy {
        source,
        trusted_proxies: trusted,
    };

    // [jwt]
    let j = &file.jwt;
    let mut algorithms = Vec::new();
    match &j.algorithms {
        None => algorithms.extend(defaults::ALGORITHMS.iter().filter_map(|a| a.parse::<Algorithm>().ok())),
        Some(list) => {
            for a in list {
                match a.get_ref().parse::<Algorithm>() {
                    Ok(alg) => algorithms.push(alg),
                    Err(_) => c.r.at(
                        a.span(),
                        format!("jwt.algorithms: {:?} is not a supported algorithm", a.get_ref()),
                    ),
                }
            }
        }
    }
    let audience = match &j.audience {
        None => vec![],
        Some(OneOrMany::One(a)) => vec![a.clone()],
        Some(OneOrMany::Many(v)) => v.clone(),
    };
    let jwt = JwtPolicy {
        algorithms: algorithms.clone(),
        issuer: j.issuer.clone().filter(|i| !i.is_empty()),
        audience,
        leeway_secs: c.duration(&j.leeway, defaults::LEEWAY, "jwt.leeway").as_secs_f64(),
        require_exp: j.require_exp.unwrap_or(false),
        partner_claim: j.partner_claim.clone().unwrap_or_else(|| "sub".into()),
        org_claim: j.org_claim.clone().unwrap_or_else(|| "org_id".into()),
        key_id_claim: j.key_id_claim.clone().unwrap_or_else(|| "jti".into()),
        org_must_be_listed: j.org_must_be_listed.unwrap_or(false),
        require_key_id: j.require_key_id.unwrap_or(false),
    };
    if jwt.partner_claim == jwt.org_claim {
        c.r.whole("jwt.partner_claim and jwt.org_claim must differ");
    }

    let mut keys = Vec::new();
    let mut kids = HashSet::new();
    for k in &j.keys {
        let line = c.r.line_of(k.span().start);
        let k = k.get_ref();
        let kid = k.kid.get_ref().clone();
        if kid.is_empty() {
            c.r.at(k.kid.span(), "jwt.keys: kid must not be empty");
        } else if !kids.insert(kid.clone()) {
            c.r.at(k.kid.span(), format!("jwt.keys: kid {kid:?} is defined twice"));
        }
        let Ok(alg) = k.algorithm.get_ref().parse::<Algorithm>() else {
            c.r.at(
                k.algorithm.span(),
                format!("jwt.keys: algorithm {:?} is not supported", k.algorithm.get_ref()),
            );
            continue;
        };
        if !algorithms.contains(&alg) {
            c.r.at(
                k.algorithm.span(),
                format!("jwt.keys: key {kid:?} uses {alg:?}, which jwt.algorithms does not allow"),
            );
        }
        let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let sources = [
            k.secret_env.is_some(),
            k.secret_file.is_some(),
            k.public_key_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            c.r.at(
                k.kid.span(),
                format!("jwt.keys: key {kid:?} needs exactly one of secret_env, secret_file, public_key_file"),
            );
            continue;
        }
        let material = if let Some(env) = &k.secret_env {
            KeyMaterial::SecretEnv(env.clone())
        } else if let Some(f) = &k.secret_file {
            KeyMaterial::SecretFile(c.path(f))
        } else {
            KeyMaterial::PublicKeyFile(c.path(k.public_key_file.as_deref().unwrap_or_default()))
        };
        let is_secret = !matches!(material, KeyMaterial::PublicKeyFile(_));
        if hmac != is_secret {
            let want = if hmac {
                "secret_env or secret_file"
            } else {
                "public_key_file"
            };
            c.r.at(k.algorithm.span(), format!("jwt.keys: a {alg:?} key takes {want}"));
        }
        if hmac && k.private_key_file.is_some() {
            c.r.at(
                k.kid.span(),
                format!("jwt.keys: key {kid:?}: private_key_file is for asymmetric keys"),
            );
        }
        keys.push(KeySource {
            kid,
            algorithm: alg,
            material,
            private_key_file: k.private_key_file.as_deref().map(|f| c.path(f)),
            line,
        });
    }
    let jwks = j.jwks.as_ref().map(|w| {
        let span = w.span();
        let w = w.get_ref();
        if w.file.is_none() && w.url.is_none() {
            c.r.at(span.clone(), "jwt.jwks needs file or url");
        }
        if let Some(u) = &w.url {
            if let Err(e) = jwks_url(u.get_ref()) {
                c.r.at(u.span(), format!("jwt.jwks.url: {e}"));
            }
        }
        let refresh = c.duration(&w.refresh, defaults::JWKS_REFRESH, "jwt.jwks.refresh");
        if refresh < Duration::from_secs(1) {
            c.r.at(span, "jwt.jwks.refresh must be at least 1s");
        }
        JwksSettings {
            file: w.file.as_deref().map(|f| c.path(f)),
            url: w.url.as_ref().map(|u| u.get_ref().clone()),
            refresh,
        }
    });

    // [policies]
    let policy_file = c.path(file.policies.file.get_ref());
    if file.policies.file.get_ref().is_empty() {
        c.r.at(file.policies.file.span(), "policies.file must name the policy file");
    }
    let learned_orgs_file = match &file.policies.learned_orgs_file {
        Some(f) => c.path(f),
        None => {
            let mut s = policy_file.clone().into_os_string();
            s.push(".orgs.jsonl");
            PathBuf::from(s)
        }
    };

    // [redis]
    let instance = instance_id(&mut c, s.instance_id.as_ref());
    let redis = file.redis.as_ref().and_then(|r| redis(&mut c, r, instance));

    // [[limits]]
    let mut limits: Vec<LimitDef> = Vec::new();
    for l in &file.limits {
        let name = l.name.get_ref();
        if name.is_empty() {
            c.r.at(l.name.span(), "limits: name must not be empty");
        } else if limits.iter().any(|d| &*d.name == name) {
            c.r.at(l.name.span(), format!("limits: {name:?} is defined twice"));
        }
        let per_minute = u32::try_from(*l.per_minute.get_ref()).ok().and_then(NonZeroU32::new);
        match per_minute {
            Some(per_minute) => limits.push(LimitDef {
                name: Arc::from(name.as_str()),
                per_minute,
            }),
            None => c.r.at(
                l.per_minute.span(),
                format!("limits: {name:?} per_minute must be 1..4294967295"),
            ),
        }
    }

    // [[routes]], then the operations of each [[openapi]] spec
    let mut routes = Vec::new();
    if file.routes.is_empty() && file.openapi.is_empty() {
        c.r.whole("at least one [[routes]] or [[openapi]] entry is required");
    }
    let mut route_upstreams = Vec::new();
    for (index, rt) in file.routes.iter().enumerate() {
        let target = route_upstream(&mut c, rt.get_ref(), &upstreams);
        if let Some(route) = route(&mut c, index, rt.get_ref(), &limits, &routes) {
            routes.push(route);
            route_upstreams.push(target);
        }
    }
    let specs = openapi::tables(
        &mut c,
        &file.openapi,
        &limits,
        &upstreams,
        &mut routes,
        &mut route_upstreams,
    );
    let authenticates = routes
        .iter()
        .any(|r: &Route| matches!(r.auth, AuthKind::Partner | AuthKind::Org));
    if authenticates && keys.is_empty() && jwks.is_none() {
        c.r.whole("routes use auth = \"partner\" or \"org\" but [jwt] has no keys ([[jwt.keys]] or [jwt.jwks])");
    }

    Settings {
        config_path: config_path.to_path_buf(),
        listen,
        admin_listen,
        threads,
        shutdown_grace,
        log_level,
        log_format,
        access_log: s.access_log.unwrap_or(true),
        underscore_headers,
        tls,
        header_timeout,
        admin_max_connections,
        upstreams,
        route_upstreams,
        fixed: StaticPolicy {
            routes: RouteTable::with_specs(routes, specs),
            client_ip,
            jwt,
            max_body_bytes: s.max_body_bytes.unwrap_or(defaults::MAX_BODY_BYTES),
            allow_path_semicolons: s.allow_path_semicolons.unwrap_or(false),
        },
        limits,
        keys,
        jwks,
        policy_file,
        learned_orgs_file,
        redis,
    }
}

/// `[server] instance_id`: how this replica names itself to the others and to
/// `authgate revoke` (default `<hostname>-<pid>`): 1-128 characters of `[A-Za-z0-9._:-]`,
/// so it can stand in a Redis hash field and a terminal line as it is.
fn instance_id(c: &mut Ctx<'_, '_>, id: Option<&Spanned<String>>) -> String {
    let Some(id) = id else {
        return format!("{}-{}", hostname(), std::process::id());
    };
    let v = id.get_ref();
    let ok = (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
    if !ok {
        c.r.at(
            id.span(),
            format!("server.instance_id: {v:?} must be 1-128 characters of A-Z a-z 0-9 . _ : -"),
        );
    }
    v.clone()
}

/// This host's name (Linux), or `authgate` when it cannot be read.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
        .take(100)
        .collect();
    if name.is_empty() {
        "authgate".into()
    } else {
        name
    }
}

/// `[server] header_timeout` (more than 0) and `admin_max_connections` (at least 1): the
/// deadlines and bounds of docs/reference.md#server that keep a slow client from holding a
/// connection.
fn deadlines(c: &mut Ctx<'_, '_>, s: &super::file::ServerFile) -> (Duration, usize) {
    let header_timeout = positive(c, &s.header_timeout, defaults::HEADER_TIMEOUT, "server.header_timeout");
    let admin_max = match &s.admin_max_connections {
        None => defaults::ADMIN_MAX_CONNECTIONS,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(v @ 1..=1_000_000) => v,
            _ => {
                c.r.at(
                    n.span(),
                    format!("server.admin_max_connections: {} is not 1..1000000", n.get_ref()),
                );
                defaults::ADMIN_MAX_CONNECTIONS
            }
        },
    };
    (header_timeout, admin_max)
}

/// `[redis]`: a `redis://` or `rediss://` URL from `url` or the variable `url_env` names
/// (exactly one), a per-command timeout, `on_error`, and how old the revocation view may be.
fn redis(c: &mut Ctx<'_, '_>, r: &Spanned<RedisFile>, instance_id: String) -> Option<RedisSettings> {
    let span = r.span();
    let r = r.get_ref();
    let url = match (&r.url, &r.url_env) {
        (Some(u), None) => Some((u.get_ref().clone(), u.span())),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Some((v, var.span())),
            _ => {
                c.r.at(
                    var.span(),
                    format!("redis.url_env: environment variable {} is not set", var.get_ref()),
                );
                None
            }
        },
        _ => {
            c.r.at(span.clone(), "redis needs exactly one of url and url_env");
            None
        }
    };
    let url = url.and_then(|(url, span)| match redis_url(&url) {
        Ok(()) => Some(url),
        Err(e) => {
            c.r.at(span, format!("redis: {e}"));
            None
        }
    });
    let timeout = c.duration(&r.timeout, defaults::REDIS_TIMEOUT, "redis.timeout");
    if timeout.is_zero() || timeout > Duration::from_secs(10) {
        let at = r.timeout.as_ref().map_or(span.clone(), |t| t.span());
        c.r.at(at, "redis.timeout must be between 1ms and 10s");
    }
    let on_error = match r.on_error.as_ref().map(|o| (o.get_ref().as_str(), o.span())) {
        None | Some(("local", _)) => OnError::Local,
        Some(("deny", _)) => OnError::Deny,
        Some((other, span)) => {
            c.r.at(span, format!("redis.on_error: {other:?} is not \"local\" or \"deny\""));
            OnError::Local
        }
    };
    let revocations_max_age = c.duration(
        &r.revocations_max_age,
        defaults::REVOCATIONS_MAX_AGE,
        "redis.revocations_max_age",
    );
    if revocations_max_age < Duration::from_secs(1) || revocations_max_age > Duration::from_secs(3600) {
        let at = r.revocations_max_age.as_ref().map_or(span.clone(), |t| t.span());
        c.r.at(at, "redis.revocations_max_age must be between 1s and 1h");
    }
    Some(RedisSettings {
        url: url?,
        key_prefix: r
            .key_prefix
            .clone()
            .unwrap_or_else(|| defaults::REDIS_KEY_PREFIX.into()),
        timeout,
        on_error,
        revocations_max_age,
        instance_id,
    })
}

/// A Redis URL: `redis://` or `rediss://` (TLS), a host, optional port and `/db`.
pub(crate) fn redis_url(url: &str) -> Result<(), String> {
    let shown = super::settings::redacted_url(url);
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or_else(|| format!("{shown:?} is not a redis:// or rediss:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || host_port.starts_with('[') => {
            if port.parse::<u16>().is_err() && !h.is_empty() && !host_port.starts_with('[') {
                return Err(format!("{shown:?}: bad port {port:?}"));
            }
            h
        }
        _ => host_port,
    };
    if host.is_empty() {
        return Err(format!("{shown:?} has no host"));
    }
    if let Some(db) = rest.split_once('/').map(|(_, db)| db).filter(|d| !d.is_empty()) {
        if db.parse::<u32>().is_err() {
            return Err(format!("{shown:?}: database {db:?} is not a number"));
        }
    }
    Ok(())
}

/// `[server.tls]`: the file names, each with its config line. The files themselves are read
/// by [`crate::config::load_policy_files`], at start and on every reload.
fn server_tls(c: &mut Ctx<'_, '_>, t: &Spanned<super::file::TlsFile>) -> TlsFiles {
    let t = t.get_ref();
    let mut file = |v: &Spanned<String>, field: &str| {
        if v.get_ref().trim().is_empty() {
            c.r.at(v.span(), format!("server.tls.{field} must name a PEM file"));
        }
        (c.path(v.get_ref()), c.r.line_of(v.span().start))
    };
    let (cert_file, cert_line) = file(&t.cert_file, "cert_file");
    let (key_file, key_line) = file(&t.key_file, "key_file");
    let client_ca_file = t.client_ca_file.as_ref().map(|v| file(v, "client_ca_file"));
    TlsFiles {
        cert_file,
        cert_line,
        key_file,
        key_line,
        client_ca_file,
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

fn route(c: &mut Ctx<'_, '_>, index: usize, rt: &RouteFile, limits: &[LimitDef], earlier: &[Route]) -> Option<Route> {
    let name = rt.name.get_ref();
    let mut ok = true;
    if name.is_empty() || name == "none" {
        c.r.at(rt.name.span(), format!("routes: name {name:?} is reserved or empty"));
        ok = false;
    } else if earlier.iter().any(|r| &*r.name == name) {
        c.r.at(rt.name.span(), format!("routes: name {name:?} is used twice"));
        ok = false;
    }
    let pattern = match Pattern::parse(rt.path.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            c.r.at(rt.path.span(), format!("routes.{name}: {e}"));
            None
        }
    };
    let method = rt.method.as_ref().map(|m| {
        ok &= route_method(c, name, m);
        m.get_ref().clone()
    });
    let auth = match rt.auth.get_ref().as_str() {
        "none" => AuthKind::None,
        "partner" => AuthKind::Partner,
        "org" => AuthKind::Org,
        "api_key" => AuthKind::ApiKey,
        other => {
            c.r.at(
                rt.auth.span(),
                format!("routes.{name}: auth {other:?} is not \"none\", \"partner\", \"org\" or \"api_key\""),
            );
            ok = false;
            AuthKind::None
        }
    };
    let org_param = match (&rt.org_param, &pattern) {
        (Some(p), Some(pat)) => match pat.param_index(p.get_ref()) {
            Some(i) => Some(i),
            None => {
                c.r.at(
                    p.span(),
                    format!(
                        "routes.{name}: org_param {:?} is not a {{capture}} of its path",
                        p.get_ref()
                    ),
                );
                ok = false;
                None
            }
        },
        _ => None,
    };
    if org_param.is_some() && auth == AuthKind::None {
        c.r.at(
            rt.auth.span(),
            format!("routes.{name}: org_param needs an authenticated route"),
        );
        ok = false;
    }
    let mut route_limits = Vec::new();
    for l in &rt.limits {
        match limits.iter().position(|d| *d.name == **l.get_ref()) {
            Some(i) => route_limits.push(i),
            None => {
                c.r.at(
                    l.span(),
                    format!("routes.{name}: limit {:?} is not defined in [[limits]]", l.get_ref()),
                );
                ok = false;
            }
        }
    }
    if !route_limits.is_empty() && auth == AuthKind::None {
        c.r.at(
            rt.auth.span(),
            format!("routes.{name}: limits need a principal; auth = \"none\" has none"),
        );
        ok = false;
    }
    let learn = rt.learn_org_from_response.as_ref().map(|p| {
        if !(p.get_ref().is_empty() || p.get_ref().starts_with('/')) {
            c.r.at(
                p.span(),
                format!(
                    "routes.{name}: learn_org_from_response {:?} is not a JSON pointer",
                    p.get_ref()
                ),
            );
            ok = false;
        }
        if auth != AuthKind::Partner {
            c.r.at(
                p.span(),
                format!("routes.{name}: learn_org_from_response needs auth = \"partner\""),
            );
            ok = false;
        }
        p.get_ref().clone()
    });
    let api_key = if auth == AuthKind::ApiKey {
        let header = rt
            .api_key_header
            .as_ref()
            .map_or(defaults::API_KEY_HEADER.to_string(), |h| h.get_ref().clone());
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            let span = rt.api_key_header.as_ref().map_or(rt.auth.span(), |h| h.span());
            c.r.at(
                span,
                format!("routes.{name}: api_key_header {header:?} is not a header name"),
            );
            ok = false;
        }
        Some(ApiKeySettings {
            header,
            prefix: rt.api_key_prefix.clone().unwrap_or_default(),
        })
    } else {
        if let Some(h) = &rt.api_key_header {
            c.r.at(
                h.span(),
                format!("routes.{name}: api_key_header only applies to auth = \"api_key\""),
            );
            ok = false;
        }
        if rt.api_key_prefix.is_some() {
            c.r.at(
                rt.auth.span(),
                format!("routes.{name}: api_key_prefix only applies to auth = \"api_key\""),
            );
            ok = false;
        }
        None
    };
    let error_format = match rt.error_format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("dto", _)) => ErrorFormat::Dto,
        Some(("simple", _)) => ErrorFormat::Simple,
        Some((other, span)) => {
            c.r.at(
                span,
                format!("routes.{name}: error_format {other:?} is not \"dto\" or \"simple\""),
            );
            ok = false;
            ErrorFormat::Dto
        }
    };
    let pattern = pattern?;
    ok.then(|| Route {
        index,
        name: Arc::from(name.as_str()),
        pattern,
        method,
        auth,
        org_param,
        limits: route_limits,
        learn_org_pointer: learn,
        api_key,
        error_format,
    })
}

/// A route's `method`: an HTTP method token without a lowercase letter (requests with one are
/// refused at step 0, `bad_method`, so such a route could never match).
fn route_method(c: &mut Ctx<'_, '_>, name: &str, m: &Spanned<String>) -> bool {
    let text = m.get_ref();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let problem = if text.is_empty() || !text.bytes().all(token) {
        format!("routes.{name}: method {text:?} is not an HTTP method token")
    } else if text.bytes().any(|b| b.is_ascii_lowercase()) {
        let upper = text.to_ascii_uppercase();
        format!("routes.{name}: method {text:?} has a lowercase letter and could never match (write {upper:?})")
    } else {
        return true;
    };
    c.r.at(m.span(), problem);
    false
}

/// `[upstream]` (the cluster `default`, one backend) and `[[upstreams]]` (docs/reference.md#upstream-clusters).
/// At least one cluster must exist; names are unique.
fn clusters(c: &mut Ctx<'_, '_>, file: &GatewayFile) -> Vec<ClusterSettings> {
    let mut clusters = Vec::new();
    if let Some(u) = &file.upstream {
        let u = u.get_ref();
        let line = c.r.line_of(u.address.span().start);
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
        clusters.push(ClusterSettings {
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
        });
    }
    for u in &file.upstreams {
        let span = u.span();
        if let Some(cluster) = cluster(c, u.get_ref(), span, &clusters) {
            clusters.push(cluster);
        }
    }
    if clusters.is_empty() {
        c.r.whole("an upstream is required: [upstream] (one backend) or [[upstreams]] (named clusters)");
    }
    clusters
}

/// One `[[upstreams]]` entry.
fn cluster(
    c: &mut Ctx<'_, '_>,
    u: &ClusterFile,
    span: std::ops::Range<usize>,
    earlier: &[ClusterSettings],
) -> Option<ClusterSettings> {
    let name = u.name.get_ref();
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        c.r.at(
            u.name.span(),
            format!("upstreams: name {name:?} must be letters, digits, '-', '_' or '.'"),
        );
        return None;
    } else if earlier.iter().any(|e| &*e.name == name) {
        let why = if name == defaults::CLUSTER {
            "is already defined by [upstream]; name this cluster differently or drop [upstream]"
        } else {
            "is defined twice"
        };
        c.r.at(u.name.span(), format!("upstreams: {name:?} {why}"));
        return None;
    }
    let mut backends: Vec<BackendSettings> = Vec::new();
    if u.backends.get_ref().is_empty() {
        c.r.at(
            u.backends.span(),
            format!("upstreams.{name}: backends must list at least one host:port"),
        );
    }
    for b in u.backends.get_ref() {
        let address = b.get_ref();
        if !valid_host_port(address) {
            c.r.at(
                b.span(),
                format!("upstreams.{name}: backend {address:?} is not host:port"),
            );
            continue;
        } else if backends.iter().any(|e| e.address == *address) {
            c.r.at(
                b.span(),
                format!("upstreams.{name}: backend {address:?} is listed twice"),
            );
            continue;
        }
        backends.push(BackendSettings {
            address: address.clone(),
            line: c.r.line_of(b.span().start),
            addr: address.parse().ok(),
        });
    }
    let selection = match u.selection.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("round_robin", _)) => Selection::RoundRobin,
        Some(("least_conn", _)) => Selection::LeastConn,
        Some(("consistent_hash", _)) => Selection::ConsistentHash,
        Some((other, span)) => {
            c.r.at(
                span,
                format!(
                    "upstreams.{name}: selection {other:?} is not \"round_robin\", \"least_conn\" or \"consistent_hash\""
                ),
            );
            Selection::RoundRobin
        }
    };
    let sni = u.sni.clone().unwrap_or_default();
    if u.tls && sni.is_empty() {
        c.r.at(
            span.clone(),
            format!("upstreams.{name}: sni is required when tls = true"),
        );
    }
    let connect_timeout = positive(
        c,
        &u.connect_timeout,
        defaults::CONNECT_TIMEOUT,
        &format!("upstreams.{name}.connect_timeout"),
    );
    let read_timeout = positive(
        c,
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

/// A cluster's `health_check` table.
fn health_check(c: &mut Ctx<'_, '_>, cluster: &str, h: &HealthCheckFile) -> HealthCheckSettings {
    let path = h.path.get_ref();
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        c.r.at(
            h.path.span(),
            format!("upstreams.{cluster}.health_check: path {path:?} must start with '/' and hold no spaces"),
        );
    }
    let interval = positive(
        c,
        &h.interval,
        defaults::HEALTH_INTERVAL,
        &format!("upstreams.{cluster}.health_check.interval"),
    );
    let timeout = positive(
        c,
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

/// A duration that must be more than zero (a zero timeout would fail every request).
/// A bad value is reported and the default returned, so validation goes on.
fn positive(c: &mut Ctx<'_, '_>, v: &Option<Spanned<String>>, default: &str, field: &str) -> Duration {
    let d = c.duration(v, default, field);
    if !d.is_zero() {
        return d;
    }
    if let Some(s) = v.as_ref().filter(|s| parse_duration(s.get_ref()).is_ok()) {
        c.r.at(s.span(), format!("{field} must be more than 0"));
    }
    parse_duration(default).unwrap_or(Duration::from_secs(1))
}

/// A route's `upstream` (an existing cluster, `"default"` when absent) and `read_timeout`.
fn route_upstream(c: &mut Ctx<'_, '_>, rt: &RouteFile, clusters: &[ClusterSettings]) -> RouteUpstream {
    let name = rt.name.get_ref();
    let wanted = rt.upstream.as_ref().map_or(defaults::CLUSTER, |u| u.get_ref().as_str());
    let cluster = match clusters.iter().position(|cl| &*cl.name == wanted) {
        Some(i) => i,
        None => {
            // No cluster at all is reported once, by `clusters`.
            if !clusters.is_empty() {
                let (span, hint) = match &rt.upstream {
                    Some(u) => (u.span(), String::new()),
                    None => (
                        rt.name.span(),
                        " (set upstream = \"<cluster>\" on the route, or name a cluster \"default\")".to_string(),
                    ),
                };
                let known: Vec<&str> = clusters.iter().map(|cl| &*cl.name).collect();
                c.r.at(
                    span,
                    format!(
                        "routes.{name}: upstream {wanted:?} is not a defined cluster{hint}; defined: {}",
                        known.join(", ")
                    ),
                );
            }
            0
        }
    };
    let read_timeout = rt.read_timeout.as_ref().map(|_| {
        positive(
            c,
            &rt.read_timeout,
            defaults::READ_TIMEOUT,
            &format!("routes.{name}.read_timeout"),
        )
    });
    RouteUpstream {
        cluster,
        read_timeout,
        websocket: rt.websocket.unwrap_or(false),
    }
}

/// A JWKS URL must be https, or http to a loopback host (`127.0.0.0/8`, `::1`,
/// `localhost`): keys fetched in clear text over a network could be anyone's.
pub(crate) fn jwks_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.to_canonical().is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "{url:?}: plain http is only allowed to a loopback host (127.0.0.0/8, ::1, localhost); use https"
                ))
            }
        }
        _ => Err(format!("{url:?} is not an https URL")),
    }
}

/// Parses a list of CIDRs / bare IPs, reporting each bad entry.
pub(crate) fn ip_list(r: &mut Reporter<'_>, list: &[Spanned<String>], field: &str) -> IpSet {
    let mut nets = Vec::new();
    for e in list {
        match parse_net(e.get_ref()) {
            Ok(n) => nets.push(n),
            Err(msg) => r.at(e.span(), format!("{field}: {msg}")),
        }
    }
    IpSet::new(nets)
}

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

    fn settings_with(extra_server: &str, client_ip: &str) -> (Settings, crate::config::Problems) {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8443\"\n{extra_server}\n[upstream]\naddress = \"127.0.0.1:3000\"\n\
             [client_ip]\n{client_ip}\n[policies]\nfile = \"partners.toml\"\n\
             [[routes]]\nname = \"health\"\npath = \"/health\"\nauth = \"none\"\n"
        );
        let (settings, problems) =
            crate::config::load::settings_from_text(Path::new("/etc/authgate/authgate.toml"), &text);
        (settings.unwrap(), problems)
    }

    #[test]
    fn the_cloudflare_preset_expands_to_the_published_ranges() {
        let (s, problems) = settings_with(
            "",
            "source = \"cf-connecting-ip\"\ntrusted_proxies = [\"cloudflare\", \"10.0.0.0/8\"]",
        );
        assert!(problems.is_empty(), "{problems}");
        let set = &s.fixed.client_ip.trusted_proxies;
        assert_eq!(set.len(), cloudflare::IPV4.len() + cloudflare::IPV6.len() + 1);
        for cidr in cloudflare::IPV4.iter().chain(cloudflare::IPV6.iter()) {
            let net: ipnet::IpNet = cidr.parse().unwrap();
            assert!(set.contains(net.network()) && set.contains(net.broadcast()), "{cidr}");
        }
        assert!(set.contains("10.1.2.3".parse().unwrap()));
        assert!(!set.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(s.fixed.client_ip.source, IpSource::CfConnectingIp);

        let (_, problems) = settings_with("", "trusted_proxies = [\"Cloudflare\"]");
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert!(
            problems.0[0].to_string().starts_with("/etc/authgate/authgate.toml:"),
            "{problems}"
        );
    }

    #[test]
    fn server_tls_names_its_files_relative_to_the_config_with_their_lines() {
        let (s, problems) = settings_with(
            "[server.tls]\ncert_file = \"certs/origin.pem\"\nkey_file = \"/keys/origin.key\"\nclient_ca_file = \"certs/ca.pem\"\n",
            "",
        );
        assert!(problems.is_empty(), "{problems}");
        let tls = s.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/authgate/certs/origin.pem"));
        assert_eq!(tls.cert_line, 4);
        assert_eq!(tls.key_file, Path::new("/keys/origin.key"));
        assert_eq!(tls.key_line, 5);
        assert_eq!(
            tls.client_ca_file,
            Some((PathBuf::from("/etc/authgate/certs/ca.pem"), 6))
        );

        let (s, problems) = settings_with("[server.tls]\ncert_file = \"\"\nkey_file = \"k.pem\"\n", "");
        assert!(s.tls.unwrap().client_ca_file.is_none());
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert!(
            problems.0[0]
                .to_string()
                .contains(":4: server.tls.cert_file must name a PEM file"),
            "{problems}"
        );

        let (s, problems) = settings_with("", "");
        assert!(s.tls.is_none() && problems.is_empty());
    }

    #[test]
    fn clusters_and_the_routes_that_pick_them() {
        let text = "[server]\nlisten = \"127.0.0.1:8443\"\n\
             [upstream]\naddress = \"127.0.0.1:3000\"\nread_timeout = \"2s\"\n\
             [[upstreams]]\nname = \"org-api\"\nbackends = [\"127.0.0.1:3001\", \"localhost:3002\"]\n\
             selection = \"consistent_hash\"\n\
             health_check = { path = \"/health\", interval = \"250ms\", unhealthy_after = 3 }\n\
             [policies]\nfile = \"partners.toml\"\n\
             [[routes]]\nname = \"health\"\npath = \"/health\"\nauth = \"none\"\n\
             [[routes]]\nname = \"stream\"\npath = \"/v1/stream/**\"\nauth = \"none\"\n\
             upstream = \"org-api\"\nread_timeout = \"5m\"\n";
        let (s, problems) = crate::config::load::settings_from_text(Path::new("/etc/authgate/authgate.toml"), text);
        assert!(problems.is_empty(), "{problems}");
        let s = s.unwrap();
        let names: Vec<&str> = s.upstreams.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["default", "org-api"]);
        let default = &s.upstreams[0];
        assert_eq!(default.selection, Selection::RoundRobin);
        assert_eq!(default.read_timeout, Duration::from_secs(2));
        assert!(default.health_check.is_none());
        assert_eq!(default.backends[0].addr, Some("127.0.0.1:3000".parse().unwrap()));
        let org = &s.upstreams[1];
        assert_eq!(org.selection, Selection::ConsistentHash);
        assert_eq!(org.read_timeout, Duration::from_secs(30), "the default");
        // an IP:port is known at once; a name waits for config::load to resolve it
        assert_eq!(org.backends[0].addr, Some("127.0.0.1:3001".parse().unwrap()));
        assert_eq!((org.backends[1].addr, org.backends[1].line), (None, 8));
        let hc = org.health_check.as_ref().unwrap();
        assert_eq!(hc.interval, Duration::from_millis(250));
        assert_eq!(hc.timeout, Duration::from_secs(1), "the default");
        assert_eq!((hc.unhealthy_after, hc.healthy_after), (3, 2));
        assert_eq!(
            s.route_upstream(0),
            RouteUpstream {
                cluster: 0,
                read_timeout: None,
                websocket: false
            }
        );
        assert_eq!(
            s.route_upstream(1),
            RouteUpstream {
                cluster: 1,
                read_timeout: Some(Duration::from_secs(300)),
                websocket: false
            }
        );
    }

    #[test]
    fn deadlines_and_semicolons_have_defaults_and_bounds() {
        let (s, problems) = settings_with("", "");
        assert!(problems.0.is_empty(), "{problems}");
        assert_eq!(s.header_timeout, Duration::from_secs(10));
        assert_eq!(s.admin_max_connections, 64);
        assert!(!s.fixed.allow_path_semicolons);
        assert!(!s.fixed.jwt.require_key_id);
        let (s, problems) = settings_with(
            "header_timeout = \"1500ms\"\nadmin_max_connections = 3\nallow_path_semicolons = true",
            "",
        );
        assert!(problems.0.is_empty(), "{problems}");
        assert_eq!(s.header_timeout, Duration::from_millis(1500));
        assert_eq!(s.admin_max_connections, 3);
        assert!(s.fixed.allow_path_semicolons);
        for (bad, what) in [
            ("header_timeout = \"0s\"", "server.header_timeout must be more than 0"),
            ("header_timeout = \"10\"", "server.header_timeout"),
            (
                "admin_max_connections = 0",
                "server.admin_max_connections: 0 is not 1..1000000",
            ),
            ("admin_max_connections = -5", "server.admin_max_connections"),
        ] {
            let (_, problems) = settings_with(bad, "");
            assert!(problems.to_string().contains(what), "{bad}: {problems}");
        }
    }

    #[test]
    fn route_methods_are_upper_case_tokens_and_websocket_is_per_route() {
        let text = |method: &str| {
            format!(
                "[server]\nlisten = \"127.0.0.1:8443\"\n[upstream]\naddress = \"127.0.0.1:3000\"\n\
                 [policies]\nfile = \"partners.toml\"\n\
                 [[routes]]\nname = \"ws\"\npath = \"/ws\"\nauth = \"none\"\nmethod = \"{method}\"\nwebsocket = true\n"
            )
        };
        let path = Path::new("/etc/authgate/authgate.toml");
        let (s, problems) = crate::config::load::settings_from_text(path, &text("GET"));
        assert!(problems.is_empty(), "{problems}");
        assert!(s.unwrap().route_upstream(0).websocket);
        let (_, problems) = crate::config::load::settings_from_text(path, &text("post"));
        assert!(
            problems.to_string().contains("method \"post\" has a lowercase letter"),
            "{problems}"
        );
        let (_, problems) = crate::config::load::settings_from_text(path, &text("G T"));
        assert!(
            problems.to_string().contains("is not an HTTP method token"),
            "{problems}"
        );
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["10", "", "s", "ten seconds", "-1s", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jwks_urls_are_https_or_loopback_http() {
        for ok in [
            "https://issuer.example/.well-known/jwks.json",
            "http://127.0.0.1:8000/jwks",
            "http://127.9.9.9/jwks",
            "http://[::1]:9/jwks",
            "http://localhost/jwks",
            "http://LOCALHOST:1/jwks",
        ] {
            assert!(jwks_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example/jwks",
            "http://10.0.0.1/jwks",
            "http://[::ffff:10.0.0.1]/jwks",
            "http://localhost.evil.example/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/jwks",
            "jwks.json",
            "",
        ] {
            assert!(jwks_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_urls() {
        for ok in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "rediss://user:secret@redis.internal:6380/2",
            "redis://:pw@10.0.0.5:6379",
            "redis://[::1]:6379/0",
        ] {
            assert!(redis_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:6379",
            "redis://",
            "redis:///0",
            "redis://host:port/0",
            "redis://host:6379/zero",
            "127.0.0.1:6379",
        ] {
            assert!(redis_url(bad).is_err(), "{bad}");
        }
        let e = redis_url("http://u:hunter2@h").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

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
