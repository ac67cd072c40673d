//! The access log: one JSON object per line for every `target: "access"` tracing event,
//! formatted by hand. The generic JSON formatter cost more CPU per request than the whole
//! security pipeline; this writer builds the line in one buffer with no intermediate map.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::logging::queue_line;

/// Target name of access-log events.
pub(crate) const TARGET: &str = "access";

/// Formats `target: "access"` events as JSON lines and queues them for the log writer.
pub(crate) struct AccessLayer;

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Vec::with_capacity(512);
        line.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(&mut line, SystemTime::now());
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(event.metadata().level().as_str().as_bytes());
        line.extend_from_slice(b"\",\"target\":\"access\"");
        event.record(&mut JsonFields { out: &mut line });
        line.extend_from_slice(b"}\n");
        queue_line(line);
    }
}

struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.out.extend_from_slice(b",\"");
        escape_into(self.out, field.name());
        self.out.extend_from_slice(b"\":");
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.out.push(b'"');
        escape_into(self.out, value);
        self.out.push(b'"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value:.3}");
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push(b'"');
        let _ = write!(Escaper(self.out), "{value:?}");
        self.out.push(b'"');
    }
}

/// A `fmt::Write` that JSON-escapes what it is given.
struct Escaper<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Appends `s` JSON-escaped (without quotes).
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
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
    let _ = write!(out, ".{:06}Z", d.subsec_micros());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        let mut out = Vec::new();
        escape_into(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"b\\\\c\\nd\\u0001é");
    }

    #[test]
    fn timestamps() {
        let mut out = Vec::new();
        write_timestamp(
            &mut out,
            UNIX_EPOCH + std::time::Duration::from_micros(1_795_423_507_239_296),
        );
        assert_eq!(String::from_utf8(out).unwrap(), "2026-11-23T08:45:07.239296Z");
    }

    #[test]
    fn events_become_one_json_line() {
        use tracing_subscriber::layer::SubscriberExt;
        let (tx, rx) = std::sync::mpsc::channel();
        crate::logging::with_test_queue(tx, || {
            let subscriber = tracing_subscriber::registry().with(AccessLayer);
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(target: "access", request_id = "r-1", status = 200u16, duration_ms = 1.5f64,
                               partner = Some("a\"b"), org = None::<&str>, client_ip = %"203.0.113.9");
            });
        });
        let line = String::from_utf8(rx.recv().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["partner"], "a\"b");
        assert_eq!(v["client_ip"], "203.0.113.9");
        assert!(v.get("org").is_none());
        assert_eq!(v["target"], "access");
        assert!(line.ends_with("}\n"));
    }
}
