//! Shared harness for the end-to-end tests: they start the real `authgate` binary with a
//! config in a fresh temp dir, in front of an in-process recording upstream, and talk to it
//! over TCP with a raw HTTP/1.1 client that sends the request target verbatim.
//!
//! Rules the helpers keep: no fixed ports (bind 127.0.0.1:0, release, retry on "in use"),
//! no sleeps as synchronisation (everything polls with a deadline), every process started
//! is stopped in `Drop`, every temp dir is removed.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod redis;
pub mod relay;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// Generous bound for anything the gateway should do "soon" on a loaded CI box.
pub const DEADLINE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------
// polling
// ------------------------------------------------------------------------------------

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------
// temp dirs and ports
// ------------------------------------------------------------------------------------

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("authgate-e2e-{label}-{}-{n}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Writes `bytes` to `rel` (parent dirs created).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&p, bytes).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(test failed; removing {})", self.path.display());
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs the `openssl` CLI in `dir` (test certificates and keys); panics naming the Debian
/// package when it is missing, and with openssl's stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}): install Debian's `openssl` package"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` arguments for a new, unencrypted P-256 key (followed by the key's file name).
pub const NEW_P256_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
];

/// A self-signed P-256 certificate valid for 30 days, `key` and `cert` written under `dir`;
/// `extra` goes after the subject (e.g. `-addext` pairs for a CA).
pub fn self_signed_p256(dir: &Path, key: &str, cert: &str, subject: &str, extra: &[&str]) {
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(&NEW_P256_KEY);
    args.extend_from_slice(&[key, "-out", cert, "-days", "30", "-subj", subject]);
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A metric some source registers: the label names its constructor declares, and whether
/// it is a histogram (so it also has `_bucket`/`_sum`/`_count` series).
#[derive(Debug, Default)]
pub struct RegisteredMetric {
    pub labels: std::collections::BTreeSet<String>,
    pub histogram: bool,
}

/// Every `"authgate_*"` name registered in `src` (read as Rust source: the name is a string
/// literal in a prometheus `Opts`/`HistogramOpts` constructor that ends at its `)?`).
pub fn registered_metrics(src: &str) -> std::collections::BTreeMap<String, RegisteredMetric> {
    let mut out = std::collections::BTreeMap::<String, RegisteredMetric>::new();
    for (i, _) in src.match_indices("\"authgate_") {
        let name: String = src[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let entry = out.entry(name).or_default();
        if src[..i].trim_end().ends_with("HistogramOpts::new(") {
            entry.histogram = true;
        }
        // the label list, if any, is the `&[...]` in the constructor
        let end = src[i..].find(")?").map_or(src.len(), |e| i + e);
        let call = &src[i..end];
        if let Some(open) = call.find("&[") {
            let list = &call[open + 2..];
            let list = &list[..list.find(']').unwrap_or(list.len())];
            for label in list.split(',') {
                let label = label.trim().trim_matches('"');
                if !label.is_empty() {
                    entry.labels.insert(label.to_string());
                }
            }
        }
    }
    out
}

/// `n` distinct ports that were free a moment ago (bound together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind :0"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

/// An address where nothing listens (for "upstream down").
pub fn closed_addr() -> String {
    format!("127.0.0.1:{}", free_ports(1)[0])
}

// ------------------------------------------------------------------------------------
// the recording upstream
// ------------------------------------------------------------------------------------

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
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
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
        Reply {
            status,
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
            content_type: "application/json".into(),
            hold: None,
        }
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

#[derive(Default)]
struct UpState {
    records: Mutex<Vec<Recorded>>,
    /// Keyed by "METHOD /path" or "/path".
    overrides: Mutex<HashMap<String, Reply>>,
    connections: AtomicUsize,
    conn_errors: AtomicUsize,
    ids: AtomicU64,
}

/// An in-process hyper 1 server on 127.0.0.1:0 that records every request.
///
/// Defaults: `POST /partner/v1/orgs` -> 201 `{"id": <fresh uuid>, "name": <from body>}`;
/// anything else -> 200 `{"ok":true}`. Every answer carries `X-Upstream: yes`.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpState::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("e2e-upstream".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("upstream runtime");
                rt.block_on(serve(listener, st, stop_rx));
                rt.shutdown_background();
            })
            .expect("spawn upstream");
        Upstream {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:port`, for the `{upstream}` placeholder.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the answer for `key` ("/path" or "METHOD /path").
    pub fn set(&self, key: &str, reply: Reply) {
        self.state.overrides.lock().unwrap().insert(key.to_string(), reply);
    }

    pub fn clear(&self, key: &str) {
        self.state.overrides.lock().unwrap().remove(key);
    }

    /// Everything received so far.
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
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: TcpListener, st: Arc<UpState>, mut stop: tokio::sync::oneshot::Receiver<()>) {
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

/// The request's headers as (lower-case name, value) pairs, in order, for the recorders.
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

async fn handle(st: Arc<UpState>, req: hyper::Request<Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let path = req.uri().path().to_string();
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
        let mut rx = gate.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let resp = hyper::Response::builder()
        .status(reply.status)
        .header("Content-Type", reply.content_type.as_str())
        .header("X-Upstream", "yes")
        .body(Full::new(Bytes::from(reply.body)))
        .expect("response");
    Ok(resp)
}

// ------------------------------------------------------------------------------------
// raw HTTP/1.1 client
// ------------------------------------------------------------------------------------

/// A response as read off the wire.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of a header (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?} (status {})",
                self.text(),
                self.status
            )
        })
    }

    /// Whether the upstream wrote it (the recording upstream marks its answers).
    pub fn proxied(&self) -> bool {
        self.header("x-upstream") == Some("yes")
    }

    pub fn request_id(&self) -> &str {
        let ids = self.all("x-request-id");
        assert_eq!(
            ids.len(),
            1,
            "expected exactly one X-Request-Id, got {ids:?} (status {})",
            self.status
        );
        ids[0]
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.text())
    }
}

struct Reader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> Reader<R> {
    fn new(inner: R) -> Self {
        Reader {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 16384];
        let n = self.inner.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn read_until(&mut self, delim: &[u8]) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.pending().windows(delim.len()).position(|w| w == delim) {
                let out = self.pending()[..i + delim.len()].to_vec();
                self.pos += i + delim.len();
                return Ok(out);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-response",
                ));
            }
        }
    }

    fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.pending().len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-body",
                ));
            }
        }
        let out = self.pending()[..n].to_vec();
        self.pos += n;
        Ok(out)
    }

    fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                // a reset after the whole response is as good as a close here
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        let out = self.pending().to_vec();
        self.pos = self.buf.len();
        Ok(out)
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_response<R: Read>(r: &mut Reader<R>, head_request: bool, keep_alive: bool) -> io::Result<Response> {
    loop {
        let head = r.read_until(b"\r\n\r\n")?;
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("not an HTTP/1.x status line: {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line = r.read_until(b"\r\n")?;
                let size_text = String::from_utf8_lossy(&line);
                let size_text = size_text.trim().split(';').next().unwrap_or("").trim().to_string();
                let size =
                    usize::from_str_radix(&size_text, 16).map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
                if size == 0 {
                    // trailers until an empty line
                    loop {
                        let t = r.read_until(b"\r\n")?;
                        if t == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                body.extend(r.read_n(size)?);
                r.read_n(2)?;
            }
            body
        } else if let Some(len) = get("content-length") {
            let n: usize = len.parse().map_err(|_| bad(format!("bad content-length {len:?}")))?;
            r.read_n(n)?
        } else if keep_alive {
            return Err(bad("keep-alive response without a length".into()));
        } else {
            r.read_to_close()?
        };
        return Ok(Response { status, headers, body });
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn build_request(
    addr: SocketAddr,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\n");
    if !has("host") {
        req.extend_from_slice(format!("Host: {addr}\r\n").as_bytes());
    }
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if close && !has("connection") {
        req.extend_from_slice(b"Connection: close\r\n");
    }
    if let Some(b) = body {
        if !has("content-length") && !has("transfer-encoding") {
            req.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
    }
    req.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    req
}

/// One request on a fresh connection (`Connection: close`, Content-Length when there is a
/// body). The target is written byte for byte.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    target: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let mut s = connect(addr)?;
    s.write_all(&build_request(addr, method, target.as_ref(), headers, body, true))?;
    read_response(&mut Reader::new(s), method == "HEAD", false)
}

/// [`try_request`] that panics on a transport error.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let target = target.as_ref();
    try_request(addr, method, target, headers, body)
        .unwrap_or_else(|e| panic!("{method} {} to {addr} failed: {e}", String::from_utf8_lossy(target)))
}

pub fn get(addr: SocketAddr, target: impl AsRef<[u8]>, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", target, headers, None)
}

/// Writes `raw` as is, then reads one response (read to close when it has no length).
pub fn exchange_raw(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut s = connect(addr)?;
    s.write_all(raw)?;
    read_response(&mut Reader::new(s), false, false)
}

/// A keep-alive connection for request loops.
pub struct Conn {
    addr: SocketAddr,
    reader: Reader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> io::Result<Conn> {
        Ok(Conn {
            addr,
            reader: Reader::new(connect(addr)?),
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        target: impl AsRef<[u8]>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let raw = build_request(self.addr, method, target.as_ref(), headers, body, false);
        self.reader.inner.write_all(&raw)?;
        read_response(&mut self.reader, method == "HEAD", true)
    }

    /// The socket, after a complete response (nothing is left buffered), for raw writes.
    pub fn into_stream(self) -> TcpStream {
        assert!(self.reader.pending().is_empty(), "bytes after the last response");
        self.reader.inner
    }
}

// ------------------------------------------------------------------------------------
// assertions on gateway-written responses
// ------------------------------------------------------------------------------------

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "?",
    }
}

/// A request id as docs/reference.md#responses allows it.
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Asserts a gateway-written error: status, JSON ErrorDto, X-Request-Id, not proxied.
/// Returns the `message`.
pub fn assert_error(resp: &Response, status: u16, context: &str) -> String {
    assert_eq!(resp.status, status, "{context}: wanted {status}, got {resp}");
    assert!(
        !resp.proxied(),
        "{context}: a gateway error must not come from the upstream: {resp}"
    );
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{context}: content-type {ct:?}: {resp}"
    );
    let v = resp.json();
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{context}: body is not an object: {resp}"));
    assert_eq!(
        obj.len(),
        3,
        "{context}: ErrorDto has exactly statusCode, message, error: {resp}"
    );
    assert_eq!(v["statusCode"], json!(status), "{context}: statusCode: {resp}");
    assert_eq!(v["error"], json!(reason_phrase(status)), "{context}: error: {resp}");
    let message = v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: message is not a string: {resp}"));
    assert!(!message.is_empty(), "{context}: empty message");
    assert!(
        valid_request_id(resp.request_id()),
        "{context}: bad X-Request-Id: {resp}"
    );
    message.to_string()
}

/// Asserts a 401 on a bearer route: ErrorDto plus `WWW-Authenticate: Bearer ...`.
/// `token_sent`: whether the header must carry `error="invalid_token"`.
pub fn assert_401_bearer(resp: &Response, token_sent: bool, context: &str) -> String {
    let msg = assert_error(resp, 401, context);
    let www = resp.all("www-authenticate");
    assert_eq!(www.len(), 1, "{context}: exactly one WWW-Authenticate: {resp}");
    let www = www[0];
    assert!(www.starts_with("Bearer"), "{context}: WWW-Authenticate {www:?}");
    assert_eq!(
        www.contains("error=\"invalid_token\""),
        token_sent,
        "{context}: WWW-Authenticate {www:?} (token sent: {token_sent})"
    );
    msg
}

// ------------------------------------------------------------------------------------
// metrics
// ------------------------------------------------------------------------------------

/// One Prometheus sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parsed `/metrics` text.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(i) if line[..i].find(' ').is_none() => {
                    let name = &line[..i];
                    let (labels, after) = parse_labels(&line[i + 1..]);
                    (name.to_string(), labels, after)
                }
                _ => {
                    let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
                    (name.to_string(), Vec::new(), rest.to_string())
                }
            };
            let value = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
            if let Some(value) = value {
                samples.push(Sample { name, labels, value });
            }
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Samples of `name` whose labels include all of `labels`.
    pub fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// Sum of the matching samples (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_labels(s: &str) -> (Vec<(String, String)>, String) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        if i >= b.len() {
            return (out, String::new());
        }
        if b[i] == b'}' {
            return (out, s[i + 1..].to_string());
        }
        let eq = s[i..].find('=').map_or(b.len(), |e| i + e);
        let key = s[i..eq].trim().to_string();
        i = eq + 2; // skip ="
        let mut val = String::new();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' && i + 1 < b.len() {
                val.push(match b[i + 1] {
                    b'n' => '\n',
                    other => other as char,
                });
                i += 2;
            } else {
                val.push(b[i] as char);
                i += 1;
            }
        }
        i += 1;
        out.push((key, val));
    }
}

// ------------------------------------------------------------------------------------
// keys and tokens
// ------------------------------------------------------------------------------------

pub const ISSUER: &str = "https://api.open.cx";
pub const AUDIENCE: &str = "partner-api";
/// The HS256 test secret (written to `keys/hs.secret` with a trailing newline).
pub const HS_SECRET: &[u8] = b"e2e-test-only-hs256-secret-0123456789abcdefABCDEF";

/// The fixture key pairs (tests/fixtures/keys, generated once with openssl; test only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Hs,
    Rs1,
    Rs2,
    Rs3,
    Es1,
    Es2,
    Ed1,
    Ed2,
}

impl Key {
    pub fn alg(self) -> Algorithm {
        match self {
            Key::Hs => Algorithm::HS256,
            Key::Rs1 | Key::Rs2 | Key::Rs3 => Algorithm::RS256,
            Key::Es1 | Key::Es2 => Algorithm::ES256,
            Key::Ed1 | Key::Ed2 => Algorithm::EdDSA,
        }
    }

    fn stem(self) -> &'static str {
        match self {
            Key::Hs => panic!("the HS key has no PEM"),
            Key::Rs1 => "test-only-rs256-1",
            Key::Rs2 => "test-only-rs256-2",
            Key::Rs3 => "test-only-rs256-3",
            Key::Es1 => "test-only-es256-1",
            Key::Es2 => "test-only-es256-2",
            Key::Ed1 => "test-only-ed25519-1",
            Key::Ed2 => "test-only-ed25519-2",
        }
    }

    pub fn private_pem(self) -> Vec<u8> {
        fixture(&format!("keys/{}.key.pem", self.stem()))
    }

    pub fn public_pem(self) -> Vec<u8> {
        fixture(&format!("keys/{}.pub.pem", self.stem()))
    }

    pub fn encoding_key(self) -> EncodingKey {
        let pem = || self.private_pem();
        match self {
            Key::Hs => EncodingKey::from_secret(HS_SECRET),
            Key::Rs1 | Key::Rs2 | Key::Rs3 => EncodingKey::from_rsa_pem(&pem()).expect("rsa pem"),
            Key::Es1 | Key::Es2 => EncodingKey::from_ec_pem(&pem()).expect("ec pem"),
            Key::Ed1 | Key::Ed2 => EncodingKey::from_ed_pem(&pem()).expect("ed pem"),
        }
    }

    /// The kid the base config gives this key (`[[jwt.keys]]`).
    pub fn config_kid(self) -> &'static str {
        match self {
            Key::Hs => "hs-1",
            Key::Rs1 => "rs-1",
            Key::Es1 => "es-1",
            Key::Ed1 => "ed-1",
            other => panic!("{other:?} is not a [[jwt.keys]] key of the base config"),
        }
    }
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Partner claims: sub, jti `key-<partner>`, iss, aud, iat now, exp in an hour.
pub fn claims(partner: &str) -> Value {
    let now = now();
    json!({"sub": partner, "jti": format!("key-{partner}"), "iss": ISSUER, "aud": AUDIENCE,
           "iat": now, "exp": now + 3600})
}

/// Org claims: org_id, jti `okey-<org>`, iss, aud, iat, exp.
pub fn org_claims(org: &str) -> Value {
    let now = now();
    json!({"org_id": org, "jti": format!("okey-{org}"), "iss": ISSUER, "aud": AUDIENCE,
           "iat": now, "exp": now + 3600})
}

/// Claims with fields replaced (`Value::Null` removes a field).
pub fn with(mut claims: Value, changes: &[(&str, Value)]) -> Value {
    let obj = claims.as_object_mut().expect("claims object");
    for (k, v) in changes {
        if v.is_null() {
            obj.remove(*k);
        } else {
            obj.insert((*k).to_string(), v.clone());
        }
    }
    claims
}

/// Signs `claims` with a fixture key under `kid`.
pub fn sign(key: Key, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(key.alg());
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &key.encoding_key()).expect("encode token")
}

/// Signs with a base-config key under its configured kid.
pub fn sign_cfg(key: Key, claims: &Value) -> String {
    sign(key, Some(key.config_kid()), claims)
}

/// HS256 token for a partner (base config kid `hs-1`).
pub fn token(partner: &str) -> String {
    sign_cfg(Key::Hs, &claims(partner))
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// A JWT with an arbitrary header; signed with `signer` (key, alg) or with an empty
/// signature when `None`.
pub fn raw_jwt(header: &Value, claims: &Value, signer: Option<(&EncodingKey, Algorithm)>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match signer {
        Some((k, alg)) => jsonwebtoken::crypto::sign(input.as_bytes(), k, alg).expect("sign"),
        None => String::new(),
    };
    format!("{input}.{sig}")
}

/// A public JWK for a fixture key, with `kid`, `use: sig` and (optionally) `alg`.
pub fn jwk(key: Key, kid: &str, with_alg: bool) -> Value {
    let k = jsonwebtoken::jwk::Jwk::from_encoding_key(&key.encoding_key(), key.alg()).expect("jwk");
    let mut v = serde_json::to_value(&k).expect("jwk json");
    let obj = v.as_object_mut().expect("jwk object");
    obj.insert("kid".into(), json!(kid));
    obj.insert("use".into(), json!("sig"));
    if with_alg {
        obj.insert("alg".into(), json!(format!("{:?}", key.alg())));
    } else {
        obj.remove("alg");
    }
    obj.remove("key_ops");
    v
}

/// A JWKS document.
pub fn jwks(keys: &[Value]) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

/// SHA-256 hex digest (for `[[api_key]] sha256`).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

// ------------------------------------------------------------------------------------
// configs
// ------------------------------------------------------------------------------------

pub const ORG_ACME: &str = "org-acme-1";
pub const ORG_ACME_UUID: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
pub const ORG_GLOBEX: &str = "org-globex-1";
pub const ORG_LOAD: &str = "org-load-1";

/// The four `[[jwt.keys]]` of the base config (files written by [`Gateway::start`]).
pub const BASE_KEYS: &str = r#"
[[jwt.keys]]
kid = "hs-1"
algorithm = "HS256"
secret_file = "keys/hs.secret"

[[jwt.keys]]
kid = "rs-1"
algorithm = "RS256"
public_key_file = "keys/rs-1.pub.pem"
private_key_file = "keys/rs-1.key.pem"

[[jwt.keys]]
kid = "es-1"
algorithm = "ES256"
public_key_file = "keys/es-1.pub.pem"
private_key_file = "keys/es-1.key.pem"

[[jwt.keys]]
kid = "ed-1"
algorithm = "EdDSA"
public_key_file = "keys/ed-1.pub.pem"
private_key_file = "keys/ed-1.key.pem"
"#;

const BASE_ROUTES: &str = r#"
[[routes]]
name = "by-external-id"
path = "/partner/v1/orgs/by-external-id/{external_id}"
auth = "partner"
limits = ["partner"]

[[routes]]
name = "login-links"
path = "/partner/v1/orgs/{org_id}/login-links"
method = "POST"
auth = "partner"
org_param = "org_id"
limits = ["partner", "login-links"]

[[routes]]
name = "org-scoped"
path = "/partner/v1/orgs/{org_id}/**"
auth = "partner"
org_param = "org_id"
limits = ["partner"]

[[routes]]
name = "orgs"
path = "/partner/v1/orgs"
auth = "partner"
limits = ["partner"]
learn_org_from_response = "/id"

[[routes]]
name = "health"
path = "/health"
auth = "none"

[[routes]]
name = "public"
path = "/public/**"
auth = "none"
"#;

/// The gateway config, mirroring the example of docs/reference.md#configuration. Placeholders `{listen}`,
/// `{admin}`, `{upstream}` are filled in by [`Gateway::start`].
#[derive(Clone, Debug)]
pub struct Cfg {
    pub max_body_bytes: u64,
    pub connect_timeout: String,
    pub read_timeout: String,
    pub shutdown_grace: String,
    /// TOML array literal.
    pub trusted_proxies: String,
    /// Extra lines inside `[jwt]` (before the keys).
    pub jwt_extra: String,
    /// The `[[jwt.keys]]` blocks.
    pub keys: String,
    /// A `[jwt.jwks]` table, or empty.
    pub jwks: String,
    pub limits_extra: String,
    /// Routes tried after the base routes.
    pub routes_extra: String,
    /// `[[upstreams]]` tables; when set they replace `[upstream]` (the base routes use the
    /// cluster named "default").
    pub upstreams: String,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            max_body_bytes: 1_048_576,
            connect_timeout: "2s".into(),
            read_timeout: "30s".into(),
            shutdown_grace: "5s".into(),
            trusted_proxies: r#"["127.0.0.0/8", "::1/128"]"#.into(),
            jwt_extra: String::new(),
            keys: BASE_KEYS.into(),
            jwks: String::new(),
            limits_extra: String::new(),
            routes_extra: String::new(),
            upstreams: String::new(),
        }
    }
}

impl Cfg {
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nthreads = 2\n");
        s.push_str(&format!("max_body_bytes = {}\n", self.max_body_bytes));
        s.push_str(&format!("shutdown_grace = \"{}\"\n", self.shutdown_grace));
        if self.upstreams.is_empty() {
            s.push_str("\n[upstream]\naddress = \"{upstream}\"\ntls = false\n");
            s.push_str(&format!(
                "connect_timeout = \"{}\"\nread_timeout = \"{}\"\n",
                self.connect_timeout, self.read_timeout
            ));
        } else {
            s.push('\n');
            s.push_str(&self.upstreams);
        }
        s.push_str("\n[client_ip]\nsource = \"x-forwarded-for\"\n");
        s.push_str(&format!("trusted_proxies = {}\n", self.trusted_proxies));
        s.push_str("\n[jwt]\nalgorithms = [\"HS256\", \"RS256\", \"ES256\", \"EdDSA\"]\n");
        s.push_str(&format!(
            "issuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\nleeway = \"30s\"\n"
        ));
        s.push_str("require_exp = false\npartner_claim = \"sub\"\norg_claim = \"org_id\"\nkey_id_claim = \"jti\"\n");
        s.push_str(&self.jwt_extra);
        s.push('\n');
        s.push_str(&self.keys);
        s.push('\n');
        s.push_str(&self.jwks);
        s.push_str("\n[policies]\nfile = \"partners.toml\"\n");
        s.push_str("\n[[limits]]\nname = \"partner\"\nper_minute = 100\n");
        s.push_str("\n[[limits]]\nname = \"login-links\"\nper_minute = 30\n");
        s.push_str(&self.limits_extra);
        s.push_str(BASE_ROUTES);
        s.push_str(&self.routes_extra);
        s
    }
}

pub fn base_config() -> String {
    Cfg::default().render()
}

/// The base policy file.
pub fn base_policy() -> String {
    format!(
        r#"# e2e test policy
[[partner]]
id = "acme"
active = true
revoked_keys = ["key-leaked"]
orgs = ["{ORG_ACME}", "{ORG_ACME_UUID}"]

[[partner]]
id = "globex"
orgs = ["{ORG_GLOBEX}"]

[[partner]]
id = "initech"
ip_allow_list = ["203.0.113.0/24", "2001:db8::/48", "198.51.100.7"]
orgs = ["org-initech-1"]

[[partner]]
id = "dormant"
active = false
orgs = ["org-dormant-1"]

[[partner]]
id = "dormant-ip"
active = false
ip_allow_list = ["203.0.113.0/24"]

[[partner]]
id = "small"
orgs = ["org-small-1"]
limits = {{ partner = 5 }}

[[partner]]
id = "small2"
orgs = ["org-small2-1"]
limits = {{ partner = 5 }}

[[partner]]
id = "loadtest"
orgs = ["{ORG_LOAD}"]
limits = {{ partner = 1000000 }}
"#
    )
}

/// Key files every gateway's config dir gets.
pub fn standard_files() -> Vec<(String, Vec<u8>)> {
    let mut secret = HS_SECRET.to_vec();
    secret.push(b'\n'); // one trailing newline is dropped by the gateway
    let mut v = vec![("keys/hs.secret".to_string(), secret)];
    for (key, name) in [(Key::Rs1, "rs-1"), (Key::Es1, "es-1"), (Key::Ed1, "ed-1")] {
        v.push((format!("keys/{name}.pub.pem"), key.public_pem()));
        v.push((format!("keys/{name}.key.pem"), key.private_pem()));
    }
    v
}

// ------------------------------------------------------------------------------------
// running the binary
// ------------------------------------------------------------------------------------

/// Output of a finished CLI run.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when it had to be killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `authgate <args>` (cwd = `cwd`), feeding `stdin`, killing it after `timeout`.
pub fn run_cli(cwd: &Path, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CliOutput {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let out_path = std::env::temp_dir().join(format!("authgate-e2e-cli-{}-{n}.out", std::process::id()));
    let err_path = out_path.with_extension("err");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn authgate");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    CliOutput { status, stdout, stderr }
}

/// Sends a signal with the `kill` command (`sig` like "HUP", "TERM").
pub fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Options for [`Gateway::start_with`].
#[derive(Clone, Debug)]
pub struct StartOpts {
    /// Wait for `/readyz` == 200 (else only `/healthz`).
    pub wait_ready: bool,
}

impl Default for StartOpts {
    fn default() -> Self {
        StartOpts { wait_ready: true }
    }
}

/// A running `authgate --config <dir>/conf/authgate.toml`, started from `<dir>/run`.
pub struct Gateway {
    pub dir: TempDir,
    /// Where authgate.toml, partners.toml and the key files live.
    pub conf: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    template: String,
    upstream: String,
    opts: StartOpts,
    child: Option<Child>,
    log: PathBuf,
    starts: usize,
}

impl Gateway {
    /// Writes the config (placeholders filled), `policy` as partners.toml, the standard key
    /// files and `files` into a fresh dir, starts the gateway and waits until it is ready.
    pub fn start(upstream: &str, config: &str, policy: &str, files: &[(&str, &[u8])]) -> Gateway {
        Self::start_with(upstream, config, policy, files, StartOpts::default())
    }

    pub fn start_with(upstream: &str, config: &str, policy: &str, files: &[(&str, &[u8])], opts: StartOpts) -> Gateway {
        let dir = TempDir::new("gw");
        let conf = dir.path.join("conf");
        std::fs::create_dir_all(dir.path.join("run")).expect("run dir");
        for (rel, bytes) in standard_files() {
            dir.write(&format!("conf/{rel}"), &bytes);
        }
        dir.write("conf/partners.toml", policy.as_bytes());
        for (rel, bytes) in files {
            dir.write(&format!("conf/{rel}"), bytes);
        }
        let log = dir.path.join("gateway.log");
        let mut gw = Gateway {
            dir,
            conf,
            addr: "127.0.0.1:1".parse().expect("addr"),
            admin: "127.0.0.1:1".parse().expect("addr"),
            template: config.to_string(),
            upstream: upstream.to_string(),
            opts,
            child: None,
            log,
            starts: 0,
        };
        gw.launch();
        gw
    }

    fn launch(&mut self) {
        for attempt in 1..=3 {
            let ports = free_ports(2);
            self.addr = format!("127.0.0.1:{}", ports[0]).parse().expect("addr");
            self.admin = format!("127.0.0.1:{}", ports[1]).parse().expect("addr");
            let config = self
                .template
                .replace("{listen}", &self.addr.to_string())
                .replace("{admin}", &self.admin.to_string())
                .replace("{upstream}", &self.upstream);
            std::fs::write(self.config_path(), config).expect("write config");
            self.starts += 1;
            {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("log");
                let _ = writeln!(f, "----- e2e: start #{} (attempt {attempt}) -----", self.starts);
            }
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.log)
                .expect("log file");
            let child = Command::new(BIN)
                .arg("--config")
                .arg(self.config_path())
                .current_dir(self.dir.path.join("run"))
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log clone"))
                .stderr(log)
                .spawn()
                .expect("spawn authgate");
            self.child = Some(child);
            match self.wait_started() {
                Ok(()) => return,
                Err(exit) => {
                    let text = self.log_text();
                    let in_use = text.to_ascii_lowercase().contains("in use");
                    if in_use && attempt < 3 {
                        continue;
                    }
                    panic!("authgate did not start ({exit}); log:\n{}", tail(&text, 80));
                }
            }
        }
    }

    fn wait_started(&mut self) -> Result<(), String> {
        let path = if self.opts.wait_ready { "/readyz" } else { "/healthz" };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("exited with {st}"));
            }
            if let Ok(r) = try_request(self.admin, "GET", path, &[], None) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("{path} not 200 within {DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.conf.join("authgate.toml")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.conf.join("partners.toml")
    }

    /// Writes a file into the config dir.
    pub fn write(&self, rel: &str, bytes: &[u8]) {
        self.dir.write(&format!("conf/{rel}"), bytes);
    }

    pub fn write_policy(&self, policy: &str) {
        self.write("partners.toml", policy.as_bytes());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway not running").id()
    }

    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> Metrics {
        let r = get(self.admin, "/metrics", &[]);
        assert_eq!(r.status, 200, "/metrics: {r}");
        Metrics::parse(&r.text())
    }

    pub fn reloads(&self, result: &str) -> f64 {
        self.metrics()
            .sum("authgate_config_reloads_total", &[("result", result)])
    }

    /// Waits until the metric sum reaches at least `at_least`.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        wait_for(DEADLINE, &format!("{name}{labels:?} >= {at_least}"), || {
            let v = self.metrics().sum(name, labels);
            (v >= at_least).then_some(v)
        })
    }

    /// Waits until the parsed metrics satisfy `pred`; returns them.
    pub fn wait_metric_where(&self, what: &str, mut pred: impl FnMut(&Metrics) -> bool) -> Metrics {
        wait_for(DEADLINE, what, || {
            let m = self.metrics();
            pred(&m).then_some(m)
        })
    }

    /// SIGHUP, then waits until `authgate_config_reloads_total{result}` grew.
    pub fn reload_expect(&self, result: &str) {
        let before = self.reloads(result);
        self.signal("HUP");
        self.wait_metric("authgate_config_reloads_total", &[("result", result)], before + 1.0);
    }

    /// SIGHUP and wait for a successful reload.
    pub fn reload(&self) {
        self.reload_expect("success");
    }

    pub fn req(
        &self,
        method: &str,
        target: impl AsRef<[u8]>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        request(self.addr, method, target, headers, body)
    }

    pub fn get(&self, target: impl AsRef<[u8]>, headers: &[(&str, &str)]) -> Response {
        get(self.addr, target, headers)
    }

    /// GET with `Authorization: Bearer <token>` plus `headers`.
    pub fn get_auth(&self, target: impl AsRef<[u8]>, token: &str, headers: &[(&str, &str)]) -> Response {
        let auth = bearer(token);
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(headers);
        get(self.addr, target, &h)
    }

    /// Polls the process for an exit until `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status when it exited
    /// by itself.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = self.child.as_ref()?.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let st = self.wait_exit(grace);
        if st.is_none() {
            self.kill();
        }
        st
    }

    /// Stops the gateway and starts it again on new ports with the same files.
    pub fn restart(&mut self) {
        let st = self.stop(Duration::from_secs(30));
        assert!(st.is_some(), "gateway did not exit on SIGTERM before restart");
        self.launch();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- authgate log ({}), last lines -----\n{}\n----- end of log -----",
                self.log.display(),
                tail(&self.log_text(), 60)
            );
        }
        self.stop(Duration::from_secs(5));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts an upstream and a gateway with the base config and policy.
pub fn base() -> (Upstream, Gateway) {
    let up = Upstream::start();
    let gw = Gateway::start(&up.address(), &base_config(), &base_policy(), &[]);
    (up, gw)
}
