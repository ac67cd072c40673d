//! Logging setup: JSON (default) or text lines on stdout; the access log
//! ([`crate::access_log::AccessRecord`]) writes its lines into the same queue.
//!
//! Request threads never block on or wake the log writer: each event is formatted into its
//! own buffer and queued; one background thread drains the queue every few milliseconds
//! and writes the batch with a single `write`. (A `write` per line, or waking the writer
//! per line, cost more CPU than the whole security pipeline.)

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// How often the writer thread drains the queue.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Lines queued beyond this are dropped (and counted) rather than growing memory without
/// bound while stdout is blocked.
const MAX_QUEUED: usize = 200_000;

static QUEUE: Mutex<Option<Sender<Vec<u8>>>> = Mutex::new(None);
static DRAIN: Mutex<Option<Receiver<Vec<u8>>>> = Mutex::new(None);
static QUEUED: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's handle on the queue (cloned once, so queueing takes no lock).
    static SENDER: RefCell<Option<Sender<Vec<u8>>>> = const { RefCell::new(None) };
}

/// Queues one formatted line for the writer thread (dropped when logging is not set up
/// or the queue is full).
pub(crate) fn queue_line(line: Vec<u8>) {
    if QUEUED.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let sent = SENDER.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = QUEUE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        }
        s.as_ref().is_some_and(|tx| tx.send(line).is_ok())
    });
    if !sent {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `f` with this thread queueing into `tx` (unit tests of the formatters).
#[cfg(test)]
pub(crate) fn with_test_queue(tx: Sender<Vec<u8>>, f: impl FnOnce()) {
    SENDER.with(|s| *s.borrow_mut() = Some(tx));
    f();
    SENDER.with(|s| *s.borrow_mut() = None);
}

/// Hands tracing-subscriber's formatter a buffer per event.
#[derive(Clone, Copy)]
pub(crate) struct BatchedStdout;

/// One event's bytes; queued when the formatter is done with it.
pub(crate) struct EventBuffer {
    buf: Vec<u8>,
}

impl Write for EventBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            queue_line(std::mem::take(&mut self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer {
            buf: Vec::with_capacity(256),
        }
    }
}

fn drain_into(rx: &Receiver<Vec<u8>>, out: &mut impl Write) {
    let mut batch = Vec::with_capacity(64 * 1024);
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            batch,
            "{{\"level\":\"WARN\",\"message\":\"{dropped} log lines dropped: stdout is not keeping up\"}}"
        );
    }
    while let Ok(line) = rx.try_recv() {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
        batch.extend_from_slice(&line);
        if batch.len() >= 256 * 1024 {
            let _ = out.write_all(&batch);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        let _ = out.write_all(&batch);
    }
    let _ = out.flush();
}

/// Installs the global subscriber (`RUST_LOG` overrides `level`); pingora's `log` records
/// are routed into it too.
pub fn init(level: &str, format: LogFormat) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let general = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(BatchedStdout)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(BatchedStdout)
            .boxed(),
    };
    let max = filter.max_level_hint();
    if tracing_subscriber::registry()
        .with(filter)
        .with(general)
        .try_init()
        .is_err()
    {
        return;
    }
    // tracing-log forwards every `log` record that log's own max level lets through: set it
    // from the filter, so pingora's `debug!`/`trace!` records are dropped at the call site.
    log::set_max_level(match max.and_then(|m| m.into_level()) {
        None if max.is_some() => log::LevelFilter::Off,
        None | Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
        Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
        Some(tracing::Level::INFO) => log::LevelFilter::Info,
        Some(tracing::Level::WARN) => log::LevelFilter::Warn,
        Some(tracing::Level::ERROR) => log::LevelFilter::Error,
    });
    *QUEUE.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    *DRAIN.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    let spawned = std::thread::Builder::new().name("authgate-log".into()).spawn(|| loop {
        std::thread::sleep(FLUSH_EVERY);
        flush();
    });
    if let Err(e) = spawned {
        eprintln!("authgate: cannot start the log writer: {e}");
    }
}

/// Writes every queued line now (call before `std::process::exit`).
pub fn flush() {
    let guard = DRAIN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rx) = guard.as_ref() {
        drain_into(rx, &mut std::io::stdout().lock());
    }
}

/// Flushes logs and exits.
pub(crate) fn exit(code: i32) -> ! {
    flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_queued_whole_and_drained_in_order() {
        let (tx, rx) = mpsc::channel();
        with_test_queue(tx, || {
            for i in 0..3 {
                let mut w = BatchedStdout.make_writer();
                write!(w, "line ").unwrap();
                writeln!(w, "{i}").unwrap();
            }
        });
        let mut out = Vec::new();
        drain_into(&rx, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "line 0\nline 1\nline 2\n");
    }
}
