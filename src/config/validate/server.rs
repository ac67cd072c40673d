//! `[server]` and `[server.tls]` (docs/reference.md#server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::{defaults, socket_addr, Ctx};
use crate::config::file::{ServerFile, TlsFile};
use crate::config::settings::{Deadlines, LogFormat, TlsFiles};
use crate::policy::upstream_headers::UnderscoreHeaders;

/// `[server]`, validated: the listeners and the process-wide settings.
pub(super) struct Server {
    pub(super) listen: SocketAddr,
    pub(super) admin_listen: SocketAddr,
    pub(super) threads: usize,
    pub(super) shutdown_grace: Duration,
    pub(super) log_level: String,
    pub(super) log_format: LogFormat,
    pub(super) access_log: bool,
    pub(super) underscore_headers: UnderscoreHeaders,
    pub(super) tls: Option<TlsFiles>,
    pub(super) deadlines: Deadlines,
    pub(super) max_body_bytes: u64,
    pub(super) allow_path_semicolons: bool,
}

/// `[server]` (all but `instance_id`, which [`instance_id`] checks with `[redis]`).
pub(super) fn server(c: &mut Ctx<'_, '_>, s: &ServerFile) -> Server {
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
    let log_level = log_level(c, s.log_level.as_ref());
    let log_format = c
        .choice(
            s.log_format.as_ref(),
            "server.log_format:",
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        )
        .unwrap_or(LogFormat::Json);
    let underscore_headers = c
        .choice(
            s.underscore_headers.as_ref(),
            "server.underscore_headers:",
            &[("drop", UnderscoreHeaders::Drop), ("allow", UnderscoreHeaders::Allow)],
        )
        .unwrap_or(UnderscoreHeaders::Drop);
    let tls = s.tls.as_ref().map(|t| tls(c, t));
    let deadlines = deadlines(c, s);
    Server {
        listen,
        admin_listen,
        threads,
        shutdown_grace,
        log_level,
        log_format,
        access_log: s.access_log.unwrap_or(true),
        underscore_headers,
        tls,
        deadlines,
        max_body_bytes: s.max_body_bytes.unwrap_or(defaults::MAX_BODY_BYTES),
        allow_path_semicolons: s.allow_path_semicolons.unwrap_or(false),
    }
}

/// `[server] log_level`: a `tracing` level, any case (kept lowercase).
fn log_level(c: &mut Ctx<'_, '_>, level: Option<&Spanned<String>>) -> String {
    let Some(l) = level else {
        return "info".to_string();
    };
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

/// `[server.tls]`: the file names, each with its config line. The files themselves are read
/// by [`crate::config::load_policy_files`], at start and on every reload.
fn tls(c: &mut Ctx<'_, '_>, t: &Spanned<TlsFile>) -> TlsFiles {
    let t = t.get_ref();
    let mut file = |v: &Spanned<String>, field: &str| -> (PathBuf, usize) {
        if v.get_ref().trim().is_empty() {
            c.r.at(v.span(), format!("server.tls.{field} must name a PEM file"));
        }
        (c.path(v.get_ref()), c.line(v.span()))
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

/// `[server] header_timeout`, `body_timeout`, `send_timeout` (each more than 0),
/// `max_head_bytes` (1 KiB .. 1 MiB) and `admin_max_connections` (at least 1): the deadlines
/// and bounds of docs/reference.md#server that keep a slow or greedy client from holding a
/// connection.
fn deadlines(c: &mut Ctx<'_, '_>, s: &ServerFile) -> Deadlines {
    let header_timeout = c.positive(&s.header_timeout, defaults::HEADER_TIMEOUT, "server.header_timeout");
    let body_timeout = c.positive(&s.body_timeout, defaults::BODY_TIMEOUT, "server.body_timeout");
    let send_timeout = c.positive(&s.send_timeout, defaults::SEND_TIMEOUT, "server.send_timeout");
    let max_head_bytes = max_head_bytes(c, s.max_head_bytes.as_ref());
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
    Deadlines {
        header_timeout,
        body_timeout,
        send_timeout,
        max_head_bytes,
        admin_max_connections: admin_max,
    }
}

/// `[server] max_head_bytes`: a byte count, as a number or a string with a unit
/// (`"64KiB"`, `"1MiB"`, `"32KB"`), between 1 KiB and 1 MiB (pingora's own head buffer).
fn max_head_bytes(c: &mut Ctx<'_, '_>, v: Option<&Spanned<toml::Value>>) -> u64 {
    let Some(v) = v else {
        return defaults::MAX_HEAD_BYTES;
    };
    let bytes = match v.get_ref() {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => super::byte_size(s),
        _ => None,
    };
    match bytes {
        Some(n @ 1024..=1_048_576) => n,
        _ => {
            c.r.at(
                v.span(),
                format!(
                    "server.max_head_bytes: {} is not a size between 1KiB and 1MiB (a number of bytes, or \"64KiB\")",
                    v.get_ref()
                ),
            );
            defaults::MAX_HEAD_BYTES
        }
    }
}

/// `[server] instance_id`: how this replica names itself to the others and to
/// `authgate revoke` (default `<hostname>-<pid>`): 1-128 characters of `[A-Za-z0-9._:-]`,
/// so it can stand in a Redis hash field and a terminal line as it is.
pub(super) fn instance_id(c: &mut Ctx<'_, '_>, id: Option<&Spanned<String>>) -> String {
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
