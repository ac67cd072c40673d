//! A raw HTTP/1.1 client that writes the request target byte for byte (what a test of path
//! hygiene needs), keep-alive connections, and the assertions on gateway-written answers.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

/// `Read::read`, retried while it fails with `Interrupted`.
///
/// Fault model: the test process is stopped and resumed (a frozen and thawed sandbox, a
/// debugger) or a signal handler runs while a blocking socket read waits; the kernel never
/// restarts a read that has a receive timeout (signal(7)), and std's `read` passes the
/// EINTR on (only `read_exact` and `read_to_end` retry). Must hold: a test sees the bytes or
/// the close the peer sent, never a spurious "Interrupted system call".
pub fn read_some<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

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
        header_values(&self.headers, name)
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

/// Every value of the header `name` (case-insensitive) among `headers`, in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
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
        let n = read_some(&mut self.inner, &mut tmp)?;
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

/// Reads one response from a connection the caller keeps (a request still being sent, an
/// interim answer already read): by its length, never waiting for the close.
pub fn read_one_response(s: &mut TcpStream) -> io::Result<Response> {
    read_response(&mut Reader::new(s), false, true)
}

/// Parses one whole response already read (reads to the end of `bytes` when it has no length).
pub fn parse_response(bytes: &[u8]) -> io::Result<Response> {
    read_response(&mut Reader::new(bytes), false, false)
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

/// The standard reason phrase of `status`, from the `http` crate (the DTO body's `error`).
pub fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("?")
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
