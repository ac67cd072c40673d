//! Backends for the upstream-cluster tests: named HTTP/1.1 servers on 127.0.0.1 that
//! answer with `X-Backend: <name>`, can be killed (every socket is closed before
//! [`Backend::kill`] returns, so the next connect is refused) and started again on the
//! same port, healthy or sick.
//!
//! Paths: `/health` (200, or 503 when sick; counted apart), `.../hang` (never answers),
//! `.../held` (answers once the test opens the gate), `.../drop` (closes the connection
//! without an answer), `.../events` (server-sent events, paced by the test), anything
//! else 200 JSON naming the backend.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{header_pairs, Gate, DEADLINE};

/// A request a backend received (health checks are only counted).
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Hit {
    /// The value of a header (case-insensitive name), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// How `.../events` streams: `count` events, each sent no sooner than `gap` after the
/// previous one and only once the test acknowledged it ([`Backend::ack`]).
#[derive(Clone, Copy, Debug)]
pub struct EventPlan {
    pub count: usize,
    pub gap: Duration,
}

struct State {
    name: String,
    sick: bool,
    hits: Mutex<Vec<Hit>>,
    health_checks: AtomicUsize,
    hold: Gate,
    plan: Mutex<EventPlan>,
    /// Events sent so far (of the latest stream).
    sent: AtomicUsize,
    acked: tokio::sync::watch::Sender<usize>,
}

/// One backend server (see the module docs).
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// A healthy backend on a fresh port.
    pub fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        Self::serve(name, listener, false)
    }

    /// A backend on `addr` (a port a killed backend had); retries while the port is busy.
    /// A `sick` one answers its health check with 503.
    pub fn start_on(name: &str, addr: SocketAddr, sick: bool) -> Backend {
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
        Self::serve(name, listener, sick)
    }

    fn serve(name: &str, listener: TcpListener, sick: bool) -> Backend {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("backend addr");
        let state = Arc::new(State {
            name: name.to_string(),
            sick,
            hits: Mutex::new(Vec::new()),
            health_checks: AtomicUsize::new(0),
            hold: Gate::new(),
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
            .name(format!("backend-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("backend runtime");
                rt.block_on(accept_loop(listener, st, stop_rx));
                // Dropping the runtime drops every connection task: all sockets close here.
                drop(rt);
            })
            .expect("spawn backend");
        Backend {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// `127.0.0.1:port`, as a config names it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Stops it: once this returns, the listener and every connection are closed.
    pub fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("backend thread");
        }
    }

    /// Requests received (health checks excluded).
    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    /// Requests received for paths ending with `suffix`.
    pub fn count_suffix(&self, suffix: &str) -> usize {
        self.hits().iter().filter(|h| h.path.ends_with(suffix)).count()
    }

    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Lets every `.../held` request (now and later) answer.
    pub fn release(&self) {
        self.state.hold.open();
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

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept_loop(listener: TcpListener, st: Arc<State>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

async fn handle(st: Arc<State>, req: hyper::Request<Incoming>) -> Result<hyper::Response<Body>, std::io::Error> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let respond = |status: u16, content_type: &str, body: Body| {
        hyper::Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .header("X-Backend", st.name.as_str())
            .body(body)
            .expect("response")
    };
    if path == "/health" {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = if st.sick { 503 } else { 200 };
        return Ok(respond(status, "text/plain", full("ok")));
    }
    let headers = header_pairs(req.headers());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    st.hits.lock().unwrap().push(Hit {
        method,
        path: path.clone(),
        headers,
        body,
    });
    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    if path.ends_with("/held") {
        let mut rx = st.hold.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
    if path.ends_with("/drop") {
        // hyper closes the connection without writing a response
        return Err(std::io::Error::other("dropped on purpose"));
    }
    if path.ends_with("/events") {
        return Ok(respond(200, "text/event-stream", events(st.clone())));
    }
    let json = format!(r#"{{"backend":"{}","path":"{path}"}}"#, st.name);
    Ok(respond(200, "application/json", full(json)))
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
