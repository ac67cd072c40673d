//! The admin listener (docs/reference.md#admin-listener): `/healthz`, `/readyz`, `/metrics`, on hyper, bound to
//! loopback by default because it is for the scraper and the orchestrator.
//!
//! Like the proxy listener it bounds slow clients: hyper's `header_read_timeout` (with a
//! timer) is a total deadline on each request head, armed when the connection starts waiting
//! for one (at accept, and after each response), so trickled bytes do not extend it; and at
//! most `admin_max_connections` connections are open: one more is closed at accept (a
//! semaphore permit per connection), so no client can exhaust file descriptors here.

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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::gateway::Gateway;

/// Serves the admin endpoints until the process ends.
pub(crate) async fn serve(listener: TcpListener, gw: Arc<Gateway>) {
    let slots = Arc::new(Semaphore::new(gw.settings().deadlines.admin_max_connections));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("admin listener: admin_max_connections open; closing a new one at accept");
            continue;
        };
        tokio::spawn(connection(stream, gw.clone(), permit));
    }
}

/// One admin connection, until the client closes it or its head deadline passes; it holds
/// its permit until then.
async fn connection(stream: TcpStream, gw: Arc<Gateway>, _permit: OwnedSemaphorePermit) {
    let header_timeout = gw.settings().deadlines.header_timeout;
    let svc = service_fn(move |req| {
        let gw = gw.clone();
        async move { Ok::<_, Infallible>(respond(&gw, &req)) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!("admin connection: {e}");
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
