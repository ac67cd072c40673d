//! The admin listener (docs/reference.md#admin-listener): `/healthz`, `/readyz`, `/metrics`, on hyper, bound to
//! loopback by default because it is for the scraper and the orchestrator.
//!
//! Like the proxy listener it bounds slow clients: hyper's `header_read_timeout` (with a
//! timer) is a total deadline on each request head, armed when the connection starts waiting
//! for one (at accept, and after each response), so trickled bytes do not extend it; and at
//! most `admin_max_connections` connections are open ([`ConnSlots`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::conn_slots::{ConnSlots, Slot};
use crate::gateway::Gateway;

/// Serves the admin endpoints until the process ends.
pub(crate) async fn serve(listener: TcpListener, gw: Arc<Gateway>) {
    let slots = ConnSlots::new(gw.settings.admin_max_connections);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                continue;
            }
        };
        let Some(slot) = slots.admit() else {
            tracing::debug!("admin listener: every connection is mid-request; closing a new one at accept");
            continue;
        };
        tokio::spawn(connection(stream, gw.clone(), slot));
    }
}

/// One admin connection, until the client closes it, its head deadline passes, or a newer
/// connection takes its slot while it waits for a head.
async fn connection(stream: TcpStream, gw: Arc<Gateway>, slot: Slot) {
    let slot = Arc::new(slot);
    let in_svc = slot.clone();
    let header_timeout = gw.settings.header_timeout;
    let svc = service_fn(move |req| {
        let gw = gw.clone();
        let slot = in_svc.clone();
        async move {
            slot.busy();
            let resp = respond(&gw, &req);
            slot.idle();
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    tokio::select! {
        done = builder.serve_connection(TokioIo::new(stream), svc) => {
            if let Err(e) = done {
                tracing::debug!("admin connection: {e}");
            }
        }
        _ = slot.evicted() => {
            tracing::debug!("admin listener full: closing a connection still waiting for its request head");
        }
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
            gw.metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}
