//! HTTP/2 connections under the `[server]` deadlines (docs/reference.md#server).
//!
//! Why our own accept loop. pingora 0.9's HTTP/2 path (`apps::HttpServerApp::process_new`)
//! awaits the h2 handshake with no bound: a TLS client that negotiated `h2` and sent no
//! preface was held forever (500 of them at 330 s in the audit). Its accept loop
//! (`accept_downstream_sessions`) is crate-private, and its idle timeout drops the socket
//! without a GOAWAY. This loop is built from pingora's public pieces
//! (`v2::server::handshake`, `HttpSession::from_h2_conn`, `ServerSession::new_http2`, the
//! app's `process_new_http`) and adds:
//! - `header_timeout` from the accept until the first complete request HEADERS, the
//!   handshake included;
//! - after that, a connection with no open stream for `header_timeout` is sent a GOAWAY and
//!   closed;
//! - `max_head_bytes` as the h2 `max_header_list_size`.
//!
//! Streams that stall on a zero flow-control window end through `send_timeout` (the
//! stream's write timeout, set per request in `request_filter`), which frees the
//! connection to go idle.

use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora::apps::HttpServerApp;
use pingora::protocols::http::v2::server::{default_h2_options, handshake, H2Accept, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use super::AuthProxy;
use crate::config::Deadlines;
use crate::metrics::{CloseReason, ConnectionsClosed, Listener};

/// How long a connection told to go away (idle, or shutting down) may take to finish.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// The streams of one connection in flight; the connection is idle at zero.
struct Active {
    count: AtomicUsize,
    /// When the count last fell to zero (the accept, before any stream).
    idle_since: Mutex<Instant>,
    idle: Notify,
}

/// Held by a stream's task for its life.
struct StreamGuard(Arc<Active>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut since) = self.0.idle_since.lock() {
                *since = Instant::now();
            }
            self.0.idle.notify_one();
        }
    }
}

impl Active {
    fn new(accepted: Instant) -> Arc<Active> {
        Arc::new(Active {
            count: AtomicUsize::new(0),
            idle_since: Mutex::new(accepted),
            idle: Notify::new(),
        })
    }

    fn start(self: &Arc<Self>) -> StreamGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// Resolves once no stream has been open for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            while self.count.load(Ordering::Acquire) != 0 {
                self.idle.notified().await;
            }
            let since = self.idle_since.lock().map_or_else(|_| Instant::now(), |s| *s);
            tokio::select! {
                _ = tokio::time::sleep_until((since + timeout).into()) => {
                    if self.count.load(Ordering::Acquire) == 0 {
                        return;
                    }
                }
                _ = self.idle.notified() => {}
            }
        }
    }
}

/// Serves one h2 connection (TLS with ALPN `h2`) until it closes or a deadline ends it.
pub(crate) async fn serve(
    app: &Arc<HttpProxy<AuthProxy>>,
    stream: Stream,
    shutdown: &ShutdownWatch,
    deadlines: Deadlines,
    closed: &ConnectionsClosed,
) {
    let accepted = Instant::now();
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut options = app.h2_options().unwrap_or_else(default_h2_options);
    options.max_header_list_size(u32::try_from(deadlines.max_head_bytes).unwrap_or(u32::MAX));
    let deadline = tokio::time::Instant::from(accepted + deadlines.header_timeout);
    let mut conn = match tokio::time::timeout_at(deadline, handshake(stream, Some(options))).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!("h2 handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("no h2 preface within header_timeout: closing");
            closed.count(Listener::Proxy, CloseReason::HeaderTimeout);
            return;
        }
    };
    let active = Active::new(accepted);
    let mut shutdown = shutdown.clone();
    let mut going_away = false;
    let mut served_any = false;
    loop {
        let accept = HttpSession::from_h2_conn(&mut conn, digest.clone());
        let next = tokio::select! {
            biased;
            _ = shutdown.changed(), if !going_away => {
                conn.graceful_shutdown();
                going_away = true;
                continue;
            }
            next = accept => next,
            _ = idle_or_never(&active, deadlines.header_timeout, going_away) => {
                let reason = if served_any { CloseReason::Idle } else { CloseReason::HeaderTimeout };
                tracing::debug!(?reason, "h2 connection without an open stream for header_timeout: GOAWAY");
                closed.count(Listener::Proxy, reason);
                conn.graceful_shutdown();
                // let the GOAWAY out, briefly: a client that reads nothing ends here anyway
                let drain = async { while let Ok(Some(_)) = HttpSession::from_h2_conn(&mut conn, digest.clone()).await {} };
                let _ = tokio::time::timeout(GOAWAY_GRACE, drain).await;
                return;
            }
        };
        match next {
            Err(e) => {
                tracing::debug!("h2 connection error: {e}");
                return;
            }
            Ok(None) => return,
            Ok(Some(H2Accept::Rejected)) => continue,
            Ok(Some(H2Accept::Session(session))) => {
                served_any = true;
                let guard = active.start();
                let app = app.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    app.process_new_http(ServerSession::new_http2(session), &shutdown).await;
                });
            }
        }
    }
}

/// The idle deadline, or never once the connection is already going away (its streams
/// finish under their own deadlines, and pingora's shutdown timeout bounds the rest).
async fn idle_or_never(active: &Active, timeout: Duration, going_away: bool) {
    if going_away {
        return pending().await;
    }
    active.idle_for(timeout).await
}
