//! The access log: one JSON object per request, formatted by hand into one buffer and
//! queued for the log writer. The generic JSON formatter cost more CPU per request than the
//! whole security pipeline, and even a `tracing` event with a custom layer spent about 5k
//! instructions a request in dispatch and field visiting; [`AccessRecord`] skips both.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::json_text::escape_into;
use crate::logging::queue_line;

/// Target name of the access log: `RUST_LOG`/`log_level` directives for `access` decide
/// whether the line is written.
pub(crate) const TARGET: &str = "access";

/// One request's access-log line, written straight into the log queue (absent optional
/// fields are left out). It is written only when the `access` target is enabled at INFO,
/// as a `tracing::info!(target: "access", ..)` event would be.
pub(crate) struct AccessRecord<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) method: &'a str,
    pub(crate) path: &'a [u8],
    pub(crate) route: &'a str,
    pub(crate) status: u16,
    pub(crate) reason: Option<&'a str>,
    pub(crate) partner: Option<&'a str>,
    pub(crate) org: Option<&'a str>,
    pub(crate) client_ip: Option<std::net::IpAddr>,
    pub(crate) upstream_status: Option<u16>,
    pub(crate) duration_us: u64,
    pub(crate) error: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// Queues the line (a no-op when INFO is filtered out for the `access` target).
    pub(crate) fn write(&self) {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        queue_line(self.line(SystemTime::now()));
    }

    // never inlined: the line's cost stays its own function in profiles
    // (benches/profile/report.py counts it as the access-log layer), for one call
    #[inline(never)]
    fn line(&self, now: SystemTime) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(&mut out, now);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"access\"");
        let str_field = |out: &mut Vec<u8>, name: &[u8], value: Option<&str>| {
            if let Some(v) = value {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name);
                out.extend_from_slice(b"\":\"");
                escape_into(out, v);
                out.push(b'"');
            }
        };
        str_field(&mut out, b"request_id", Some(self.request_id));
        str_field(&mut out, b"method", Some(self.method));
        // from_utf8 first: it checks ASCII a word at a time, where from_utf8_lossy walks
        // the bytes in chunks even when they are valid
        let path = match std::str::from_utf8(self.path) {
            Ok(p) => std::borrow::Cow::Borrowed(p),
            Err(_) => String::from_utf8_lossy(self.path),
        };
        str_field(&mut out, b"path", Some(&path));
        str_field(&mut out, b"route", Some(self.route));
        push_number(&mut out, b",\"status\":", u64::from(self.status));
        str_field(&mut out, b"reason", self.reason);
        str_field(&mut out, b"partner", self.partner);
        str_field(&mut out, b"org", self.org);
        if let Some(ip) = self.client_ip {
            out.extend_from_slice(b",\"client_ip\":\"");
            out.extend_from_slice(crate::ip_text::ip_text(ip).as_bytes());
            out.push(b'"');
        }
        if let Some(s) = self.upstream_status {
            push_number(&mut out, b",\"upstream_status\":", u64::from(s));
        }
        push_number(&mut out, b",\"duration_us\":", self.duration_us);
        str_field(&mut out, b"error", self.error);
        out.extend_from_slice(b"}\n");
        out
    }
}

thread_local! {
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second seen on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-23T08:45:07.239296Z`.
pub(crate) fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let mut s = String::with_capacity(20);
            let _ = write!(
                s,
                "{}",
                humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs))
            );
            s.truncate(19);
            *cached = (secs, s);
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    // `.{:06}Z` without core::fmt: 1_000_000 + micros has seven digits, and the last six
    // are the microseconds, zero-padded
    let mut digits = itoa::Buffer::new();
    let seven = digits.format(1_000_000 + d.subsec_micros()).as_bytes();
    out.push(b'.');
    out.extend_from_slice(&seven[1..]);
    out.push(b'Z');
}

/// `name` (the `,"key":` text) and `n` in decimal, appended to `out`.
fn push_number(out: &mut Vec<u8>, name: &[u8], n: u64) {
    out.extend_from_slice(name);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_object_in_a_fixed_field_order() {
        let mut rec = AccessRecord {
            request_id: "r-1",
            method: "GET",
            path: b"/partner/v1/orgs/\"x\"/\xff",
            route: "org-scoped",
            status: 401,
            reason: Some("invalid_token"),
            partner: Some("p1"),
            org: None,
            client_ip: Some("203.0.113.9".parse().unwrap()),
            upstream_status: None,
            duration_us: 42,
            error: None,
        };
        let line = rec.line(UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456));
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let text = std::str::from_utf8(&line).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} missing"));
        let order = [
            "timestamp",
            "level",
            "target",
            "request_id",
            "method",
            "path",
            "route",
            "status",
            "reason",
            "partner",
            "client_ip",
            "duration_us",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
        assert_eq!(v.as_object().unwrap().len(), order.len(), "{text}");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["target"], "access");
        assert_eq!(v["path"], "/partner/v1/orgs/\"x\"/\u{fffd}");
        assert_eq!(v["status"], 401);
        assert_eq!(v["client_ip"], "203.0.113.9");
        rec.upstream_status = Some(200);
        rec.error = Some("ConnectRefused");
        let v: serde_json::Value = serde_json::from_slice(&rec.line(SystemTime::now())).unwrap();
        assert_eq!(v["upstream_status"], 200);
        assert_eq!(v["error"], "ConnectRefused");
    }

    #[test]
    fn timestamps() {
        let mut out = Vec::new();
        write_timestamp(
            &mut out,
            UNIX_EPOCH + std::time::Duration::from_micros(1_795_423_507_239_296),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2026-11-23T08:45:07.239296Z");
        let mut out = Vec::new();
        write_timestamp(
            &mut out,
            UNIX_EPOCH + std::time::Duration::from_micros(1_795_423_507_000_005),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2026-11-23T08:45:07.000005Z");
    }
}
