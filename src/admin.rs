//! The admin listener (docs/reference.md#admin-listener): `/healthz`, `/readyz`, `/metrics`, on hyper, bound to
//! loopback by default because it is for the scraper and the orchestrator.
//!
//! Like the proxy listener it bounds slow clients: hyper's `header_read_timeout` (with a
//! timer) is a total deadline on each request head, armed when the connection starts waiting
//! for one (at accept, and after each response), so trickled bytes do not extend it. At most
//! `admin_max_connections` connections are held; when all slots are taken, a new connection
//! evicts the held one that has gone longest without a request (a trickler, an idle
//! keep-alive, a client that pipelined requests and stopped reading the answers), so the
//! orchestrator's `/healthz` always gets in.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::gateway::Gateway;
use crate::metrics::{CloseReason, ConnectionsClosed, Listener};

/// One held admin connection.
struct Slot {
    id: u64,
    /// Microseconds since the listener started at which this connection was accepted or last
    /// had a request: the eviction order.
    last_request: AtomicU64,
    /// Told when the slot is taken away.
    evict: Notify,
}

/// The held connections, at most `max`.
struct Slots {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    held: Mutex<Vec<Arc<Slot>>>,
}

impl Slots {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A slot for a new connection; when all are held, the one longest without a request is
    /// evicted (its connection closes) and returned as the second value.
    fn take(&self) -> (Arc<Slot>, bool) {
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            last_request: AtomicU64::new(self.now()),
            evict: Notify::new(),
        });
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if held.len() >= self.max {
            let oldest = held
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_request.load(Ordering::Relaxed))
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                // notify_one keeps a permit: the connection sees it even if not waiting yet
                held.swap_remove(i).evict.notify_one();
                evicted = true;
            }
        }
        held.push(slot.clone());
        (slot, evicted)
    }

    /// The connection ended on its own: its slot is free.
    fn release(&self, id: u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|s| s.id == id) {
            held.swap_remove(i);
        }
    }
}

/// Serves the admin endpoints until the process ends.
pub(crate) async fn serve(listener: TcpListener, gw: Arc<Gateway>) {
    let slots = Arc::new(Slots {
        max: gw.settings().deadlines.admin_max_connections,
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        held: Mutex::new(Vec::new()),
    });
    let closed = gw.metrics().connections_closed();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                continue;
            }
        };
        let (slot, evicted) = slots.take();
        if evicted {
            tracing::debug!("admin listener: admin_max_connections held; evicted the one longest without a request");
            closed.count(Listener::Admin, CloseReason::Evicted);
        }
        tokio::spawn(connection(stream, gw.clone(), slots.clone(), slot, closed.clone()));
    }
}

/// One admin connection, until the client closes it, its head deadline passes or it is
/// evicted; its slot is held until then.
async fn connection(
    stream: TcpStream,
    gw: Arc<Gateway>,
    slots: Arc<Slots>,
    slot: Arc<Slot>,
    closed: ConnectionsClosed,
) {
    let header_timeout = gw.settings().deadlines.header_timeout;
    let svc = {
        let (slots, slot) = (slots.clone(), slot.clone());
        service_fn(move |req| {
            slot.last_request.store(slots.now(), Ordering::Relaxed);
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(respond(&gw, &req)) }
        })
    };
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let serving = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        served = serving => {
            slots.release(slot.id);
            if let Err(e) = served {
                if e.is_timeout() {
                    closed.count(Listener::Admin, CloseReason::HeaderTimeout);
                }
                tracing::debug!("admin connection: {e}");
            }
        }
        // evicted: dropping the connection closes it (its slot is already taken away)
        _ = slot.evict.notified() => {}
    }
}

fn respond(gw: &Gateway, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, ctype: &'static str| {
        Response::builder()
            .status(status)
            .header("Content-Type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            "text/plain",
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" if gw.ready() => text(StatusCode::OK, "ready\n".into(), "text/plain"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), "text/plain"),
        "/metrics" => text(
            StatusCode::OK,
            gw.render_metrics(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}
