//! The one fake upstream: an in-process hyper 1 server on 127.0.0.1 that records every
//! request and answers as the test set it up.
//!
//! [`Upstream::start`] is the upstream behind `[upstream]`. [`Upstream::backend`] is a named
//! backend of a cluster: it also says who answered (`X-Backend: <name>`) and answers its own
//! health check (`/health`: 200, or 503 when started sick; counted, not recorded). Either
//! can be killed (every socket is closed before [`Upstream::kill`] returns, so the next
//! connect is refused) and a backend started again on the same port
//! ([`Upstream::backend_on`]).
//!
//! Answers, the first that applies:
//! - the [`Reply`] the test set for "METHOD /path" or "/path" ([`Upstream::set`]);
//! - by the path's end: `.../hang` never answers, `.../held` answers once the test calls
//!   [`Upstream::release`], `.../drop` closes the connection without an answer, `.../events`
//!   streams server-sent events paced by the test ([`EventPlan`]);
//! - `POST /partner/v1/orgs`: 201 `{"id": <fresh uuid>, "name": <from the body>}`;
//! - anything else: 200 `{"ok":true}`.
//!
//! Every answer carries `X-Upstream: yes`; on a path ending in `/close` it also carries
//! `Connection: close`, so the gateway keeps no pooled connection to this upstream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::client::header_values;
use super::{wait_for, DEADLINE};

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The request target as received (path and query).
    pub target: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False when the body ended in an error (connection closed mid-body).
    pub body_complete: bool,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Every value of a header (case-insensitive name).
    pub fn all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// The value of a header that must appear at most once.
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "upstream got {} {name} headers: {all:?}", all.len());
        all.first().copied()
    }

    /// Header names starting with `prefix` (lower-case).
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Holds upstream answers until the test opens it (no timing involved).
#[derive(Clone, Debug)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    /// Lets every held answer (and every later one) go.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn opened(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// A canned upstream answer for a path (overrides the defaults).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub content_type: String,
    /// When set, the answer waits until the gate is opened.
    pub hold: Option<Gate>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::raw(status, body.to_string().as_bytes(), "application/json")
    }

    pub fn raw(status: u16, body: &[u8], content_type: &str) -> Reply {
        Reply {
            status,
            body: body.to_vec(),
            delay: Duration::ZERO,
            content_type: content_type.into(),
            hold: None,
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn held(mut self, gate: &Gate) -> Reply {
        self.hold = Some(gate.clone());
        self
    }
}

/// How `.../events` streams: `count` events, each sent no sooner than `gap` after the
/// previous one and only once the test acknowledged it ([`Upstream::ack`]).
#[derive(Clone, Copy, Debug)]
pub struct EventPlan {
    pub count: usize,
    pub gap: Duration,
}

struct State {
    /// A backend's name (`X-Backend`); a named upstream answers `/health` itself.
    name: Option<String>,
    /// A sick backend answers its health check with 503.
    sick: bool,
    records: Mutex<Vec<Recorded>>,
    /// Keyed by "METHOD /path" or "/path".
    overrides: Mutex<HashMap<String, Reply>>,
    conn_errors: AtomicUsize,
    /// Connections accepted (a request the gateway refused must not open one).
    connections: AtomicUsize,
    health_checks: AtomicUsize,
    ids: AtomicU64,
    /// Holds `.../held` answers.
    held: Gate,
    plan: Mutex<EventPlan>,
    /// Events sent so far (of the latest stream).
    sent: AtomicUsize,
    acked: tokio::sync::watch::Sender<usize>,
}

/// The fake upstream (see the module docs).
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// The recording upstream, on a fresh port.
    pub fn start() -> Upstream {
        Self::serve(None, bind_fresh(), false)
    }

    /// A healthy backend named `name`, on a fresh port.
    pub fn backend(name: &str) -> Upstream {
        Self::serve(Some(name), bind_fresh(), false)
    }

    /// A backend on `addr` (a port a killed backend had); retries while the port is busy.
    /// A `sick` one answers its health check with 503.
    pub fn backend_on(name: &str, addr: SocketAddr, sick: bool) -> Upstream {
        let started = Instant::now();
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if started.elapsed() < DEADLINE => {
                    eprintln!("rebinding {addr}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        Self::serve(Some(name), listener, sick)
    }

    fn serve(name: Option<&str>, listener: TcpListener, sick: bool) -> Upstream {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State {
            name: name.map(str::to_string),
            sick,
            records: Mutex::new(Vec::new()),
            overrides: Mutex::new(HashMap::new()),
            conn_errors: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
            held: Gate::new(),
            plan: Mutex::new(EventPlan {
                count: 3,
                gap: Duration::ZERO,
            }),
            sent: AtomicUsize::new(0),
            acked: tokio::sync::watch::channel(0).0,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("e2e-upstream-{}", name.unwrap_or("recording")))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("upstream runtime");
                rt.block_on(accept_loop(listener, st, stop_rx));
                // Dropping the runtime drops every connection task: all sockets close here.
                drop(rt);
            })
            .expect("spawn upstream");
        Upstream {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:port`, for the `{upstream}` placeholder or a cluster's `backends`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Stops it: once this returns, the listener and every connection are closed.
    pub fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("upstream thread");
        }
    }

    /// Sets the answer for `key` ("/path" or "METHOD /path").
    pub fn set(&self, key: &str, reply: Reply) {
        self.state.overrides.lock().unwrap().insert(key.to_string(), reply);
    }

    pub fn clear(&self, key: &str) {
        self.state.overrides.lock().unwrap().remove(key);
    }

    /// Everything received so far (a backend's health checks excluded).
    pub fn records(&self) -> Vec<Recorded> {
        self.state.records.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.records.lock().unwrap().len()
    }

    /// Requests received for this exact path (query ignored).
    pub fn for_path(&self, path: &str) -> Vec<Recorded> {
        self.records().into_iter().filter(|r| r.path() == path).collect()
    }

    /// Requests received for paths ending with `suffix`.
    pub fn count_suffix(&self, suffix: &str) -> usize {
        self.records().iter().filter(|r| r.path().ends_with(suffix)).count()
    }

    /// Waits until a request for `path` arrived; returns the latest one.
    pub fn wait_path(&self, path: &str) -> Recorded {
        wait_for(DEADLINE, &format!("upstream request for {path}"), || {
            self.for_path(path).pop()
        })
    }

    /// Waits until `n` requests in total arrived.
    pub fn wait_count(&self, n: usize) -> Vec<Recorded> {
        wait_for(DEADLINE, &format!("{n} upstream requests"), || {
            let r = self.records();
            (r.len() >= n).then_some(r)
        })
    }

    /// The last request received (panics when none).
    pub fn last(&self) -> Recorded {
        self.records().pop().expect("the upstream received no request")
    }

    pub fn conn_errors(&self) -> usize {
        self.state.conn_errors.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Lets every `.../held` request (now and later) answer.
    pub fn release(&self) {
        self.state.held.open();
    }

    pub fn set_events(&self, plan: EventPlan) {
        *self.state.plan.lock().unwrap() = plan;
    }

    /// Events of the current stream sent so far.
    pub fn sent(&self) -> usize {
        self.state.sent.load(Ordering::SeqCst)
    }

    /// The test has received event `n`: the stream may send the next one.
    pub fn ack(&self, n: usize) {
        self.state.acked.send_replace(n);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bind_fresh() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind upstream")
}

async fn accept_loop(listener: TcpListener, st: Arc<State>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let st2 = st.clone();
                    let svc = service_fn(move |req| handle(st2.clone(), req));
                    if http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await.is_err() {
                        st.conn_errors.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        }
    }
}

fn fresh_uuid(n: u64) -> String {
    let r: u128 = rand::random::<u128>() ^ u128::from(n);
    let h = format!("{r:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The request's headers as (lower-case name, value) pairs, in order.
pub fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

async fn handle(st: Arc<State>, req: hyper::Request<Incoming>) -> Result<hyper::Response<Body>, std::io::Error> {
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let path = req.uri().path().to_string();
    let respond = |status: u16, content_type: &str, body: Body| {
        let mut b = hyper::Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .header("X-Upstream", "yes");
        if let Some(name) = &st.name {
            b = b.header("X-Backend", name.as_str());
        }
        b.body(body).expect("response")
    };
    if st.name.is_some() && path == "/health" {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = if st.sick { 503 } else { 200 };
        return Ok(respond(status, "text/plain", full("ok")));
    }
    let headers = header_pairs(req.headers());
    let mut body_stream = req.into_body();
    let mut body = Vec::new();
    let mut complete = true;
    while let Some(frame) = body_stream.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let request_body = body.clone();
    st.records.lock().unwrap().push(Recorded {
        method: method.clone(),
        target,
        headers,
        body,
        body_complete: complete,
    });

    let reply = {
        let o = st.overrides.lock().unwrap();
        o.get(&format!("{method} {path}")).or_else(|| o.get(&path)).cloned()
    };
    let reply = match reply {
        Some(r) => r,
        None if path.ends_with("/hang") => std::future::pending().await,
        None if path.ends_with("/held") => {
            st.held.opened().await;
            Reply::json(200, json!({"ok": true}))
        }
        // hyper closes the connection without writing a response
        None if path.ends_with("/drop") => return Err(std::io::Error::other("dropped on purpose")),
        None if path.ends_with("/events") => return Ok(respond(200, "text/event-stream", events(st.clone()))),
        None if method == "POST" && path == "/partner/v1/orgs" => {
            let name = serde_json::from_slice::<Value>(&request_body)
                .ok()
                .and_then(|v| v.get("name").cloned());
            let id = fresh_uuid(st.ids.fetch_add(1, Ordering::SeqCst));
            Reply::json(201, json!({"id": id, "name": name.unwrap_or(Value::Null)}))
        }
        None => Reply::json(200, json!({"ok": true})),
    };
    if let Some(gate) = &reply.hold {
        gate.opened().await;
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = respond(reply.status, &reply.content_type, full(reply.body));
    if path.ends_with("/close") {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}

/// The server-sent-event body of `.../events` (see [`EventPlan`]).
fn events(st: Arc<State>) -> Body {
    let plan = *st.plan.lock().unwrap();
    st.sent.store(0, Ordering::SeqCst);
    st.acked.send_replace(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let mut acked = st.acked.subscribe();
        for n in 1..=plan.count {
            if n > 1 {
                tokio::time::sleep(plan.gap).await;
                if acked.wait_for(|a| *a >= n - 1).await.is_err() {
                    return;
                }
            }
            st.sent.store(n, Ordering::SeqCst);
            if tx
                .send(Bytes::from(format!("id: {n}\ndata: event {n}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    StreamBody::new(stream).boxed()
}
