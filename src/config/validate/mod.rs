//! `authgate.toml` (file structs) -> [`Settings`], collecting every problem with its line.
//!
//! One function per TOML table, each in the file of its table, called in file order by
//! [`settings`]: `[server]` ([`server`]), `[upstream]`/`[[upstreams]]` ([`upstreams`]),
//! `[client_ip]`, `[jwt]` with `[[jwt.keys]]` and `[jwt.jwks]`, `[policies]`, `[redis]`,
//! `[[limits]]` and `[[routes]]`. Problems are reported in that order, so `check` lists
//! them as they stand in a file laid out like the shipped one.
//!
//! A route from elsewhere (an OpenAPI operation) is validated like a `[[routes]]` entry by
//! [`routes::route`] and [`routes::route_upstream`], with a [`Ctx`] on the file it came from.

mod client_ip;
mod jwt;
mod openapi;
mod policies;
mod redis;
pub(crate) mod routes;
mod server;
mod upstreams;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::file::GatewayFile;
use super::problem::{Problems, Reporter};
use super::settings::Settings;
use crate::policy::ip_set::{parse_net, IpSet};
use crate::policy::pipeline::StaticPolicy;
use crate::policy::routes::{AuthKind, Route, RouteTable};

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
    pub(crate) const BODY_TIMEOUT: &str = "10s";
    pub(crate) const SEND_TIMEOUT: &str = "30s";
    pub(crate) const MAX_HEAD_BYTES: u64 = 64 * 1024;
}

/// Parses a duration with a unit (`ms`, `s`, `m`, `h`; combinations like `1m30s` allowed).
/// A byte size with a unit, as the size keys take it: `"64KiB"`, `"1MiB"`, `"32KB"`, `"512B"`
/// or a bare number of bytes (`"4096"`); `None` when it is none of these or overflows.
pub(crate) fn byte_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        _ => return None,
    };
    n.checked_mul(scale)
}

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

/// What every table's validation needs: the reporter of the config file (problems with
/// their line) and the config file's directory (relative paths are relative to it).
pub(crate) struct Ctx<'a, 'r> {
    /// Where problems go, with the line of the span they are reported at.
    pub(crate) r: &'r mut Reporter<'a>,
    dir: PathBuf,
}

impl<'a, 'r> Ctx<'a, 'r> {
    /// A context reporting to `r`, resolving relative paths against `dir`.
    pub(crate) fn new(r: &'r mut Reporter<'a>, dir: &Path) -> Self {
        Ctx {
            r,
            dir: dir.to_path_buf(),
        }
    }
}

impl Ctx<'_, '_> {
    /// A duration key: the default when absent; a bad value is reported and zero returned.
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

    /// A duration that must be more than zero (a zero timeout would fail every request).
    /// A bad value is reported and the default returned, so validation goes on.
    fn positive(&mut self, v: &Option<Spanned<String>>, default: &str, field: &str) -> Duration {
        let d = self.duration(v, default, field);
        if !d.is_zero() {
            return d;
        }
        if let Some(s) = v.as_ref().filter(|s| parse_duration(s.get_ref()).is_ok()) {
            self.r.at(s.span(), format!("{field} must be more than 0"));
        }
        parse_duration(default).unwrap_or(Duration::from_secs(1))
    }

    /// A key whose value is one word of a closed set (`choices`, each with what it means).
    /// Absent, it is the first choice. Any other word is reported at its line as
    /// `{label} {word:?} is not "a", "b" or "c"` and `None` returned: the caller picks the
    /// value that lets validation go on.
    fn choice<T: Copy>(&mut self, value: Option<&Spanned<String>>, label: &str, choices: &[(&str, T)]) -> Option<T> {
        let Some(value) = value else {
            return choices.first().map(|(_, v)| *v);
        };
        let word = value.get_ref().as_str();
        if let Some((_, v)) = choices.iter().find(|(w, _)| *w == word) {
            return Some(*v);
        }
        let quoted: Vec<String> = choices.iter().map(|(w, _)| format!("{w:?}")).collect();
        let listed = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.r.at(value.span(), format!("{label} {word:?} is not {listed}"));
        None
    }

    /// A path from the config file, relative to its directory.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        resolve(&self.dir, rel)
    }

    /// The 1-based line of a span's start (for problems found later, when files are read).
    pub(crate) fn line(&self, span: Range<usize>) -> usize {
        self.r.line_of(span.start)
    }
}

/// A path from a config file, relative to that file's directory.
fn resolve(dir: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// The config path as an absolute path (relative names are relative to the working directory).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Parses and validates gateway-config text without reading any other file. Returns the
/// settings (unless the TOML itself does not parse) and every problem found; `check` and
/// the fuzz targets use it as the pure first stage of [`crate::config::load()`].
pub fn settings_from_text(config_path: &Path, text: &str) -> (Option<Settings>, Problems) {
    let absolute_path = absolute(config_path);
    let mut r = Reporter::new(config_path, text);
    let file: GatewayFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            r.parse_error(&e);
            return (None, r.finish());
        }
    };
    let settings = settings(&file, &absolute_path, &mut r);
    (Some(settings), r.finish())
}

/// Validates the parsed gateway file, table by table in file order. `config_path` must be
/// absolute.
pub(crate) fn settings(file: &GatewayFile, config_path: &Path, r: &mut Reporter<'_>) -> Settings {
    let mut c = Ctx::new(r, config_path.parent().unwrap_or(Path::new("/")));
    let server = server::server(&mut c, &file.server);
    let upstreams = upstreams::upstreams(&mut c, file);
    let client_ip = client_ip::client_ip(&mut c, &file.client_ip);
    let jwt = jwt::jwt(&mut c, &file.jwt);
    let keys = jwt::jwt_keys(&mut c, &file.jwt.keys, &jwt.algorithms);
    let jwks = jwt::jwks(&mut c, file.jwt.jwks.as_ref());
    let (policy_file, learned_orgs_file) = policies::policies(&mut c, &file.policies);
    let instance = server::instance_id(&mut c, file.server.instance_id.as_ref());
    let redis = file.redis.as_ref().and_then(|r| redis::redis(&mut c, r, instance));
    let limits = policies::limits(&mut c, &file.limits);
    if file.routes.is_empty() && file.openapi.is_empty() {
        c.r.whole("at least one [[routes]] or [[openapi]] entry is required");
    }
    let (mut routes, mut route_upstreams) = routes::routes(&mut c, &file.routes, &limits, &upstreams);
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
        listen: server.listen,
        admin_listen: server.admin_listen,
        threads: server.threads,
        shutdown_grace: server.shutdown_grace,
        log_level: server.log_level,
        log_format: server.log_format,
        access_log: server.access_log,
        underscore_headers: server.underscore_headers,
        tls: server.tls,
        deadlines: server.deadlines,
        upstreams,
        route_upstreams,
        fixed: StaticPolicy {
            routes: RouteTable::with_specs(routes, specs),
            client_ip,
            jwt,
            max_body_bytes: server.max_body_bytes,
            allow_path_semicolons: server.allow_path_semicolons,
        },
        limits,
        keys,
        jwks,
        policy_file,
        learned_orgs_file,
        redis,
    }
}

/// An `IP:port` key; a bad value is reported (and `127.0.0.1:0` stands in).
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

#[cfg(test)]
mod tests;
