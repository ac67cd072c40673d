//! `[server] header_timeout` on the proxy listener (docs/reference.md#server): a connection
//! that has not sent a complete request head within the timeout, counted from its accept or
//! from the end of its previous response, is closed.
//!
//! Why a wrapper, and this one. pingora 0.9 bounds the head only per read: the HTTP/1 server
//! session (`pingora-core` `protocols/http/v1/server.rs`, `read_request_buf`) wraps *each*
//! `read_buf` in the keep-alive timeout (60 s, set by the `HttpServerApp` loop) or in
//! `read_timeout`, and `pingora-proxy`'s `process_new_http` -> `handle_new_request` awaits
//! `read_request()` with no overall bound. One byte every 59 s resets the clock forever:
//! 1,050 such clients exhausted the file limit in the audit. No `ServerConf` or
//! `HttpServerOptions` field bounds the whole head (`h2_idle_timeout` is HTTP/2 only), and a
//! connection filter only sees the peer address at accept.
//!
//! So [`HeadDeadline`] is the `ServerApp` of the proxy service in place of pingora's blanket
//! `impl ServerApp for HttpServerApp`: it runs the same HTTP/1 keep-alive loop, and races each
//! [`HttpServerApp::process_new_http`] against the deadline until the head is in. Knowing when
//! the head is in needs no HTTP parsing of our own and no wrapper around the socket: each
//! session carries a connection user context ([`HeadReceived`]), which `process_new_http`
//! hands to [`ProxyHttp::on_connection_reuse`](pingora::proxy::ProxyHttp::on_connection_reuse)
//! right after `read_request()` returned a head, before any filter runs; that hook calls
//! [`HeadReceived::mark`]. Past that point the request is never cut by this deadline (slow
//! upstreams and long bodies have their own timeouts). Before it, the future is only parked
//! in `read_request()`, so dropping it at the deadline just closes the connection (no 408:
//! the reference allows a plain close).
//!
//! The same loop reads each connection through [`HeadLimited`] (`max_head_bytes`, 431), and
//! HTTP/2 connections (TLS with ALPN `h2`) go to our own accept loop with the same
//! deadlines ([`super::h2_deadline`]). The TLS handshake itself precedes this app: pingora
//! bounds it with a fixed 60 s.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;

use super::head_limit::{HeadLimited, HeadState};
use super::hold::ResponseHold;
use super::AuthProxy;
use crate::config::Deadlines;
use crate::metrics::{CloseReason, ConnectionsClosed, Listener};

/// pingora's idle keep-alive timeout between requests, kept as its `HttpServerApp` loop
/// sets it (our deadline is the shorter one unless `header_timeout` is over a minute).
const KEEPALIVE_SECS: u64 = 60;

/// The proxy service's application: pingora's HTTP proxy behind a per-head deadline.
pub(crate) struct HeadDeadline {
    inner: Arc<HttpProxy<AuthProxy>>,
    deadlines: Deadlines,
    closed: ConnectionsClosed,
}

/// The proxy listener's service: `proxy` served with `header_timeout` on every request head,
/// `max_head_bytes` on every head, and the HTTP/2 deadlines.
pub(crate) fn service(
    conf: &Arc<ServerConf>,
    proxy: AuthProxy,
    deadlines: Deadlines,
    closed: ConnectionsClosed,
) -> Service<HeadDeadline> {
    let mut http = pingora::proxy::http_proxy(conf, proxy);
    http.server_options = Some(HttpServerOptions::default());
    let app = HeadDeadline {
        inner: Arc::new(http),
        deadlines,
        closed,
    };
    Service::new("authgate".to_string(), app)
}

/// Where a request's connection settings come from: pingora's loop sets them on a new
/// connection, and carries them over from the previous request on a reused one.
enum Persistent {
    First,
    Reused(Option<HttpPersistentSettings>),
}

/// What [`HeadDeadline`] hands through pingora as the connection user context: the
/// connection's head state ([`HeadReceived::mark`] records that the request head is read)
/// and its [`ResponseHold`].
pub(crate) struct HeadReceived {
    head: Arc<HeadState>,
    hold: Arc<ResponseHold>,
}

impl HeadReceived {
    /// Called from `on_connection_reuse` with the context pingora hands over: the head of
    /// this session's request is complete, so neither the deadline nor the head limit
    /// applies to it any more. Returns the connection's hold, for the request's context.
    pub(crate) fn mark(ctx: Box<dyn Any + Send + Sync>) -> Option<Arc<ResponseHold>> {
        let received = ctx.downcast::<HeadReceived>().ok()?;
        received.head.received.store(true, Ordering::Release);
        Some(received.hold)
    }
}

impl HeadDeadline {
    /// One request of an HTTP/1 connection: pingora's `process_new_http`, dropped (closing
    /// the connection) when the deadline passes before the head is complete.
    ///
    /// The deadline is pingora's fast timer (10 ms ticks, one shared timer per tick, armed
    /// only if the head is not in by the first poll), as pingora's own per-read timeouts
    /// are: a tokio timer per request re-arms the worker's timer wheel and, whenever it is
    /// the earliest deadline, wakes the event loop through its eventfd.
    ///
    /// It takes the stream, not a session: the session is built here, in this future's own
    /// state, rather than built by the caller and moved (about 1 KB copied per request).
    async fn serve_one(
        self: &Arc<Self>,
        stream: Stream,
        persistent: Persistent,
        shutdown: &ShutdownWatch,
        head: &Arc<HeadState>,
        hold: &Arc<ResponseHold>,
    ) -> Option<ReusedHttpStream> {
        let mut session = ServerSession::new_http1(stream);
        match persistent {
            Persistent::First => {
                session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE_SECS));
                let limit = self.inner.server_options().and_then(|o| o.keepalive_request_limit);
                session.set_keepalive_reuses_remaining(limit);
            }
            Persistent::Reused(Some(settings)) => settings.apply_to_session(&mut session),
            Persistent::Reused(None) => {}
        }
        head.start_head();
        let context = HeadReceived {
            head: head.clone(),
            hold: hold.clone(),
        };
        session.set_connection_user_context(Some(Box::new(context)));
        let mut work = pin!(self.inner.process_new_http(session, shutdown));
        let timeout = self.deadlines.header_timeout;
        let mut timer = pin!(pingora::time::fast_timeout::fast_sleep(timeout));
        poll_fn(|cx| {
            // a response held on work it must not complete before (hold.rs): the request is
            // polled again only once that work is done
            if hold.poll_released(cx).is_pending() {
                return Poll::Pending;
            }
            if let Poll::Ready(reused) = work.as_mut().poll(cx) {
                return Poll::Ready(reused);
            }
            if hold.poll_released(cx).is_pending() {
                return Poll::Pending;
            }
            // checked after polling the work: a head completed in this very poll counts
            if !head.received.load(Ordering::Acquire) && timer.as_mut().poll(cx).is_ready() {
                tracing::debug!(?timeout, "no complete request head within header_timeout: closing");
                self.closed.count(Listener::Proxy, CloseReason::HeaderTimeout);
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

#[async_trait]
impl ServerApp for HeadDeadline {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            super::h2_deadline::serve(&self.inner, stream, shutdown, self.deadlines, &self.closed).await;
            return None;
        }
        // pingora's HTTP/1 keep-alive loop (apps/mod.rs), each request under the deadline;
        // one head state and one hold per connection, the head state reset for each head
        let head = HeadState::new(self.deadlines.max_head_bytes);
        let stream = HeadLimited::wrap(stream, head.clone(), self.closed.clone());
        let hold = Arc::new(ResponseHold::default());
        let mut reused = self.serve_one(stream, Persistent::First, shutdown, &head, &hold).await;
        while let Some((stream, settings)) = reused.map(ReusedHttpStream::consume) {
            reused = self
                .serve_one(stream, Persistent::Reused(settings), shutdown, &head, &hold)
                .await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}
