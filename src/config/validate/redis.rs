//! `[redis]` (docs/reference.md#redis): the shared state of several replicas.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{defaults, Ctx};
use crate::config::file::RedisFile;
use crate::config::settings::{redacted_url, OnError, RedisSettings};

/// `[redis]`: a `redis://` or `rediss://` URL from `url` or the variable `url_env` names
/// (exactly one), a per-command timeout, `on_error`, and how old the revocation view may be.
pub(super) fn redis(c: &mut Ctx<'_, '_>, r: &Spanned<RedisFile>, instance_id: String) -> Option<RedisSettings> {
    let span = r.span();
    let r = r.get_ref();
    let url = url(c, r, span.clone());
    let timeout = c.duration(&r.timeout, defaults::REDIS_TIMEOUT, "redis.timeout");
    if timeout.is_zero() || timeout > Duration::from_secs(10) {
        let at = r.timeout.as_ref().map_or(span.clone(), |t| t.span());
        c.r.at(at, "redis.timeout must be between 1ms and 10s");
    }
    let on_error = c
        .choice(
            r.on_error.as_ref(),
            "redis.on_error:",
            &[("local", OnError::Local), ("deny", OnError::Deny)],
        )
        .unwrap_or(OnError::Local);
    let revocations_max_age = c.duration(
        &r.revocations_max_age,
        defaults::REVOCATIONS_MAX_AGE,
        "redis.revocations_max_age",
    );
    if revocations_max_age < Duration::from_secs(1) || revocations_max_age > Duration::from_secs(3600) {
        let at = r.revocations_max_age.as_ref().map_or(span, |t| t.span());
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

/// The URL of `url` or of the variable `url_env` names (exactly one), checked.
fn url(c: &mut Ctx<'_, '_>, r: &RedisFile, table: Range<usize>) -> Option<String> {
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
            c.r.at(table, "redis needs exactly one of url and url_env");
            None
        }
    };
    url.and_then(|(url, span)| match redis_url(&url) {
        Ok(()) => Some(url),
        Err(e) => {
            c.r.at(span, format!("redis: {e}"));
            None
        }
    })
}

/// A Redis URL: `redis://` or `rediss://` (TLS), a host, optional port and `/db`.
fn redis_url(url: &str) -> Result<(), String> {
    let shown = redacted_url(url);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
