//! End-to-end: request differentials and deadlines (docs/reference.md#pipeline step 0/1,
//! #routes, #headers-the-client-gets, #server; the audit of issue 24). Each test starts the
//! real binary in front of an upstream that records what it received, attacks one way a
//! request the gateway checked could mean something else to the upstream (or a connection
//! could be held forever), and proves from outside that it is closed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// The base config with extra `[server]` lines, `[[limits]]` and routes.
fn config(server_extra: &str, limits_extra: &str, routes_extra: &str, jwt_extra: &str) -> String {
    Cfg {
        server_extra: server_extra.into(),
        limits_extra: limits_extra.into(),
        routes_extra: routes_extra.into(),
        jwt_extra: jwt_extra.into(),
        ..Cfg::default()
    }
    .render()
}

/// A GET-only, org-owned, rate-limited partner route, then an unauthenticated catch-all:
/// the shape in which a request that skips the first route lands on the second.
const REPORT_THEN_CATCH_ALL: &str = r#"
[[routes]]
name = "report"
path = "/reports/{org_id}"
method = "GET"
auth = "partner"
org_param = "org_id"
limits = ["partner"]

[[routes]]
name = "catch-all"
path = "/**"
auth = "none"
"#;

/// Fault model: a client sends the method in lower case (`post`) to slip past a
/// `method = "POST"` route (login-links, 30/min) onto a broader one, as Django, Flask and
/// Express upper-case it and run the POST handler. Must hold: 400 `bad_method`, nothing
/// reaches the upstream, no bucket is charged.
#[test]
fn lowercase_methods_are_refused_not_routed_past_a_method_route() {
    let (up, gw) = base();
    let auth = bearer(&token("acme"));
    for method in ["post", "Post", "gET", "delete"] {
        let path = format!("/partner/v1/orgs/{ORG_ACME}/login-links");
        let r = gw.req(method, &path, &[("Authorization", &auth)], Some(b"{}"));
        let msg = assert_error(&r, 400, method);
        assert!(msg.contains("lowercase"), "{method}: {msg}");
        assert!(r.header("x-ratelimit-limit").is_none(), "{method} was charged: {r}");
    }
    assert_eq!(
        up.count(),
        0,
        "a lower-case method reached the upstream: {:?}",
        up.records()
    );
    gw.wait_denied("none", "bad_method", 4.0);
    // the upper-case request takes the login-links route and its limit
    let r = gw.req(
        "POST",
        format!("/partner/v1/orgs/{ORG_ACME}/login-links"),
        &[("Authorization", &auth)],
        Some(b"{}"),
    );
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (200, Some("30")), "{r}");
}

/// Fault model: `HEAD` on a GET-only route used to fall through to a later route (an
/// unauthenticated catch-all answered 200), while Express, Rails and Spring run the GET
/// handler for HEAD. Must hold: HEAD meets the GET route's auth, limits and ownership, and
/// reaches the upstream as HEAD only when they pass.
#[test]
fn head_takes_the_get_route_with_its_checks() {
    let (up, gw) = base_with(&config("", "", REPORT_THEN_CATCH_ALL, ""));
    let own = format!("/reports/{ORG_ACME}");
    let r = gw.req("HEAD", &own, &[], None);
    assert_eq!(r.status, 401, "HEAD without a token: {r}");
    assert!(!r.proxied(), "{r}");
    let auth = bearer(&token("acme"));
    let r = gw.req(
        "HEAD",
        format!("/reports/{ORG_GLOBEX}"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 403, "HEAD on another partner's org: {r}");
    assert_eq!(up.count(), 0, "{:?}", up.records());
    let r = gw.req("HEAD", &own, &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("100"),
        "HEAD is charged like GET: {r}"
    );
    let rec = up.last();
    assert_eq!((rec.method.as_str(), rec.path()), ("HEAD", own.as_str()));
    assert_eq!(rec.one("x-partner-id"), Some("acme"));
    gw.wait_requests("report", "HEAD", "200", 1.0);
}

/// Fault model: a `;` path parameter (`/partner;x/v1/...`) made the gateway route the path
/// onto a catch-all while Tomcat, Jetty and Spring strip `;...` before routing and run the
/// partner endpoint. Must hold: `;` (raw or `%3B`) is 400 `bad_path` by default; with
/// `allow_path_semicolons` each segment is matched and captured on its part before `;`, so
/// ownership and limits apply to what the upstream runs, and the path is forwarded as sent.
#[test]
fn semicolons_are_refused_or_matched_as_the_upstream_routes_them() {
    let (up, gw) = base_with(&config("", "", REPORT_THEN_CATCH_ALL, ""));
    for path in [
        format!("/partner;x/v1/orgs/{ORG_GLOBEX}/api-keys"),
        format!("/reports;x/{ORG_GLOBEX}"),
        format!("/reports%3Bx/{ORG_GLOBEX}"),
        format!("/reports/{ORG_ACME}%3b"),
        "/public/a;b".to_string(),
    ] {
        let r = gw.get(&path, &[]);
        let msg = assert_error(&r, 400, &path);
        assert!(msg.contains("';'"), "{path}: {msg}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.records());

    let gw = Gateway::start(
        &up.address(),
        &config("allow_path_semicolons = true\n", "", REPORT_THEN_CATCH_ALL, ""),
        &base_policy(),
        &[],
    );
    let tok = token("acme");
    // the route is found through `;`: no token -> 401, not the catch-all's 200
    let r = gw.get(format!("/reports;x/{ORG_ACME}"), &[]);
    assert_eq!(r.status, 401, "{r}");
    // the capture is the part before ';': the globex org is not acme's
    let r = gw.get_auth(format!("/reports/{ORG_GLOBEX};{ORG_ACME}"), &tok, &[]);
    assert_eq!(r.status, 403, "{r}");
    assert_eq!(up.count(), 0, "{:?}", up.records());
    let path = format!("/reports;v=1/{ORG_ACME};jsessionid=x");
    let r = gw.get_auth(&path, &tok, &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().target, path, "forwarded as received");
    // login-links keeps its 30/min limit behind ';'
    let r = gw.req(
        "POST",
        format!("/partner/v1/orgs/{ORG_ACME}/login-links;x"),
        &[("Authorization", &bearer(&tok))],
        Some(b"{}"),
    );
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (200, Some("30")), "{r}");
    // a segment that is nothing but parameters is an empty segment
    let r = gw.get("/public/;x/y", &[]);
    assert_error(&r, 400, "/public/;x/y");
}

/// Fault model: a `_method` query parameter (any case, percent-encoded, PHP spellings) is
/// honoured by Laravel and Rails, which then run another method than the one the gateway
/// checked. Must hold: 400 `bad_method`, nothing reaches the upstream; other parameters pass.
#[test]
fn method_override_query_parameters_are_refused() {
    let (up, gw) = base();
    for target in [
        "/public/x?_method=DELETE",
        "/public/x?a=1&_METHOD=put",
        "/public/x?%5Fmethod=DELETE",
        "/public/x?.method=DELETE",
        "/public/x?_method[]=PATCH",
    ] {
        let r = gw.req("POST", target, &[], Some(b"{}"));
        let msg = assert_error(&r, 400, target);
        assert!(msg.contains("_method"), "{target}: {msg}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.records());
    let r = gw.get("/public/x?method=DELETE&x=_method", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().target, "/public/x?method=DELETE&x=_method");
}

// ------------------------------------------------------------------------------------
// upgrades and hop-by-hop response headers: an upstream that speaks raw HTTP/1.1
// ------------------------------------------------------------------------------------

/// What the raw upstream saw, in order.
#[derive(Clone, Debug)]
enum Seen {
    /// A request head (lower-cased) on connection `conn`.
    Head { conn: usize, head: String },
    /// Bytes received on `conn` after it answered 101.
    Tunnel { conn: usize, bytes: Vec<u8> },
    /// `conn` was closed by the gateway.
    Closed { conn: usize },
}

/// An upstream scripted in raw HTTP/1.1, for what hyper will not send: a 101 to a request
/// without an upgrade, and hop-by-hop response headers. A request whose head has `Upgrade`,
/// or whose path contains `switch`, gets a 101 and the connection then echoes (a tunnel);
/// any other request gets a 200 with hop-by-hop headers. Every answer carries
/// `X-Upstream: yes`.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

const SWITCH: &str = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Internal-Token\r\n\
     Upgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
     X-Internal-Token: s3cret\r\nKeep-Alive: timeout=5\r\nX-Upstream: yes\r\n\r\n";

const OK_WITH_HOP_BY_HOP: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
     Connection: keep-alive, X-Internal-Token, X-Debug\r\nX-Internal-Token: s3cret\r\nX-Debug: trace-1\r\n\
     Keep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
     X-Kept: yes\r\nX-Upstream: yes\r\n\r\nok";

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let conns = AtomicUsize::new(0);
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let conn = conns.fetch_add(1, Ordering::SeqCst);
                let seen = seen2.clone();
                std::thread::spawn(move || serve_raw(stream, conn, &seen));
            }
        });
        RawUpstream { addr, seen, stop }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn heads(&self) -> Vec<(usize, String)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Head { conn, head } => Some((conn, head)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// One upstream connection: heads answered from the script until a 101, then an echo.
fn serve_raw(mut s: TcpStream, conn: usize, seen: &Mutex<Vec<Seen>>) {
    let record = |e: Seen| seen.lock().unwrap().push(e);
    let mut tunnel = false;
    loop {
        if tunnel {
            let mut buf = [0u8; 4096];
            match read_some(&mut s, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record(Seen::Tunnel {
                        conn,
                        bytes: buf[..n].to_vec(),
                    });
                    let _ = s.write_all(&buf[..n]);
                }
            }
            continue;
        }
        let Some(head) = read_head(&mut s) else { break };
        let head = head.to_ascii_lowercase();
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        record(Seen::Head {
            conn,
            head: head.clone(),
        });
        tunnel = head.contains("\r\nupgrade:") || path.contains("switch");
        let answer = if tunnel { SWITCH } else { OK_WITH_HOP_BY_HOP };
        if s.write_all(answer.as_bytes()).is_err() {
            break;
        }
    }
    record(Seen::Closed { conn });
}

/// Reads up to the end of a head (`\r\n\r\n`), byte by byte; `None` on close.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match read_some(s, &mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

fn upgrade_request(path: &str, auth: Option<&str>, extra: &str) -> String {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Fault model: a client sends `Upgrade: websocket` on an ordinary route and the upstream
/// (buggy, or answering the client's wish) replies 101; the connection became an unchecked
/// tunnel, and a second request inside it reached the upstream with a client-chosen
/// `X-Partner-Id`. Must hold: `Upgrade` never reaches the upstream there, the 101 becomes a
/// 502 `upstream_unavailable`, the upstream connection is closed (never reused or
/// tunnelled), and bytes behind the request never reach the upstream.
#[test]
fn upgrades_are_stripped_and_an_unasked_101_is_a_502_on_a_closed_connection() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&up.addr.to_string(), &base_config(), &base_policy(), &[]);
    let smuggled = "GET /public/inside HTTP/1.1\r\nHost: gw\r\nX-Partner-Id: evil\r\n\r\n";
    let raw = format!("{}{smuggled}", upgrade_request("/public/switch", None, ""));
    let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
    let msg = assert_error(&r, 502, "101 on a plain route");
    assert_eq!(msg, "Upstream service unavailable");
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let (conn, head) = &heads[0];
    assert!(head.starts_with("get /public/switch "), "{head}");
    assert!(!head.contains("\r\nupgrade:"), "Upgrade reached the upstream: {head}");
    // the upstream connection that said 101 is closed by the gateway
    wait_for(DEADLINE, "the 101 connection closed", || {
        up.seen()
            .iter()
            .any(|s| matches!(s, Seen::Closed { conn: c } if c == conn))
            .then_some(())
    });
    // ... and never reused: the next request arrives on a new connection
    let r = gw.get("/public/after", &[]);
    assert_eq!(r.status, 200, "{r}");
    let heads = up.heads();
    let (next, _) = heads.iter().find(|(_, h)| h.starts_with("get /public/after ")).unwrap();
    assert_ne!(next, conn, "the 101 connection was reused");
    let seen = up.seen();
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Tunnel { .. })),
        "bytes were tunnelled: {seen:?}"
    );
    assert!(!heads.iter().any(|(_, h)| h.contains("evil")), "{heads:?}");
    gw.wait_denied("public", "upstream_unavailable", 1.0);
}

/// Fault model: WebSocket routes need the upgrade; an upgrade request must not be a way
/// around the pipeline, and the 101's own hop-by-hop headers must stay upstream. Must hold:
/// on a `websocket = true` route the upgrade request passes auth and ownership first (401 /
/// 403 reach nobody), then the upstream gets `Upgrade: websocket` with the gateway's
/// identity headers, and the client gets the 101 (without the headers it nominates) and a
/// working tunnel.
#[test]
fn websocket_routes_upgrade_only_after_every_check() {
    let up = RawUpstream::start();
    let routes = r#"
[[routes]]
name = "ws"
path = "/ws/{org_id}"
auth = "partner"
org_param = "org_id"
limits = ["partner"]
websocket = true
"#;
    let gw = Gateway::start(&up.addr.to_string(), &config("", "", routes, ""), &base_policy(), &[]);
    let r = exchange_raw(
        gw.addr,
        upgrade_request(&format!("/ws/{ORG_ACME}"), None, "").as_bytes(),
    )
    .unwrap();
    assert_401_bearer(&r, false, "upgrade without a token");
    let auth = bearer(&token("acme"));
    let raw = upgrade_request(&format!("/ws/{ORG_GLOBEX}"), Some(&auth), "");
    let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
    assert_error(&r, 403, "upgrade on another partner's org");
    assert!(up.heads().is_empty(), "{:?}", up.heads());

    let mut s = raw_connect(gw.addr);
    let raw = upgrade_request(&format!("/ws/{ORG_ACME}"), Some(&auth), "X-Partner-Id: evil\r\n");
    s.write_all(raw.as_bytes()).unwrap();
    let head = read_head(&mut s).expect("the 101").to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket"), "{head}");
    for gone in ["x-internal-token", "keep-alive:"] {
        assert!(!head.contains(gone), "{gone} reached the client: {head}");
    }
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let up_head = &heads[0].1;
    assert!(up_head.contains("\r\nupgrade: websocket\r\n"), "{up_head}");
    assert!(up_head.contains("\r\nx-partner-id: acme\r\n"), "{up_head}");
    assert!(!up_head.contains("evil"), "{up_head}");
    s.write_all(b"frame-1").unwrap();
    let mut echo = [0u8; 7];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"frame-1");
    let ws = heads[0].0;
    let tunnelled = |seen: &Seen| matches!(seen, Seen::Tunnel { conn, bytes } if *conn == ws && bytes == b"frame-1");
    assert!(up.seen().iter().any(tunnelled), "{:?}", up.seen());
}

/// Fault model: the upstream names internal headers in its response `Connection` header
/// and sends `Keep-Alive`, `Proxy-Connection` and `Upgrade`: connection state of the
/// gateway-upstream hop (and whatever it nominates) would reach the client and any cache in
/// front of it. Must hold: none of them reach the client; other headers and the body do.
#[test]
fn hop_by_hop_response_headers_stay_on_the_upstream_hop() {
    let up = RawUpstream::start();
    let gw = Gateway::start(&up.addr.to_string(), &base_config(), &base_policy(), &[]);
    for target in ["/public/x", "/health"] {
        let r = gw.get(target, &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{r}");
        assert_eq!(r.header("x-kept"), Some("yes"), "{r}");
        for name in [
            "x-internal-token",
            "x-debug",
            "keep-alive",
            "proxy-connection",
            "upgrade",
        ] {
            assert!(r.header(name).is_none(), "{target}: {name} reached the client: {r}");
        }
        assert!(
            r.all("connection")
                .iter()
                .all(|v| !v.to_ascii_lowercase().contains("x-internal")),
            "{r}"
        );
    }
}

// ------------------------------------------------------------------------------------
// identity values
// ------------------------------------------------------------------------------------

/// Fault model: a signed token whose org id (or key id) carries CR/LF, or is huge, got a
/// 500 after its rate-limit bucket was charged (the upstream header could not be built);
/// `authgate token` and the policy file could produce such values too. Must hold: 401
/// `invalid_token` before any bucket is charged (a 1/min limit never answers 429 for it),
/// nothing reaches the upstream, and the CLI and `check` refuse such ids.
#[test]
fn identity_values_with_control_characters_are_401_before_any_bucket() {
    let routes = r#"
[[routes]]
name = "org-api"
path = "/v1/orgs/{org_id}/**"
auth = "org"
limits = ["org-tight"]
"#;
    let limits = "\n[[limits]]\nname = \"org-tight\"\nper_minute = 1\n";
    let (up, gw) = base_with(&config("", limits, routes, ""));
    let long = "o".repeat(300);
    for org in ["org-1\r\nX-Partner-Id: evil", "org-1\u{0}", long.as_str()] {
        // a clean key id: the principal itself is what is refused
        let tok = sign_cfg(Key::Hs, &with(org_claims(org), &[("jti", Value::from("k-1"))]));
        for attempt in 0..2 {
            let r = gw.get_auth("/v1/orgs/x/info", &tok, &[]);
            let msg = assert_401_bearer(&r, true, &format!("{org:?} #{attempt}"));
            assert!(msg.contains("control character"), "{msg}");
        }
    }
    let jti = with(claims("acme"), &[("jti", Value::from("key\r\n1"))]);
    let r = gw.get_auth("/public/x", &sign_cfg(Key::Hs, &jti), &[]);
    assert_eq!(r.status, 200, "an auth = none route ignores the token: {r}");
    let r = gw.get_auth(
        format!("/partner/v1/orgs/{ORG_ACME}/users"),
        &sign_cfg(Key::Hs, &jti),
        &[],
    );
    assert_401_bearer(&r, true, "key id with CR/LF");
    assert_eq!(up.count(), 1, "only the auth = none request: {:?}", up.records());
    // a clean org token still has its own fresh bucket
    let good = sign_cfg(Key::Hs, &org_claims("org-1"));
    assert_eq!(gw.get_auth("/v1/orgs/x/info", &good, &[]).status, 200);
    assert_eq!(gw.get_auth("/v1/orgs/x/info", &good, &[]).status, 429);

    // the CLI does not mint what the gateway refuses, and the policy file cannot name it
    let run = gw.dir.path.join("run");
    let cfg = gw.config_path();
    let cfg = cfg.to_str().unwrap();
    let out = run_cli(
        &run,
        &["token", "--config", cfg, "--partner", "acme\r\nX: y"],
        None,
        DEADLINE,
    );
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.all().contains("control character"), "{}", out.all());
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    gw.write(
        "bad.toml",
        text.replace("\"partners.toml\"", "\"bad-partners.toml\"").as_bytes(),
    );
    let policy = format!(
        "{}\n[[api_key]]\nid = \"ak\\r\\nX-Org-Id: evil\"\norg = \"o-1\"\nsha256 = \"{}\"\n",
        base_policy(),
        sha256_hex(b"org_aaaaaaaaaaaaaaaaaaaa")
    );
    gw.write("bad-partners.toml", policy.as_bytes());
    let bad = gw.conf.join("bad.toml");
    let out = run_cli(&run, &["check", "--config", bad.to_str().unwrap()], None, DEADLINE);
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.all().contains("control character"), "{}", out.all());
}

/// Fault model: a token without a key id can never be revoked, and nothing let an operator
/// require one. Must hold: with `[jwt] require_key_id = true` such a token is 401
/// `invalid_token`; a token with one passes.
#[test]
fn require_key_id_refuses_tokens_that_could_never_be_revoked() {
    let (up, gw) = base_with(&config("", "", "", "require_key_id = true\n"));
    let path = format!("/partner/v1/orgs/{ORG_ACME}/users");
    let no_jti = sign_cfg(Key::Hs, &with(claims("acme"), &[("jti", Value::Null)]));
    let msg = assert_401_bearer(&gw.get_auth(&path, &no_jti, &[]), true, "no jti");
    assert!(msg.contains("key id"), "{msg}");
    assert_eq!(up.count(), 0);
    assert_eq!(gw.get_auth(&path, &token("acme"), &[]).status, 200);
}

// ------------------------------------------------------------------------------------
// deadlines
// ------------------------------------------------------------------------------------

/// Writes `start`, then one byte every 250 ms (the read timeout paces it), until the peer
/// closes the connection; panics if it is still open after [`DEADLINE`]. Asserts nothing
/// about how soon: only that it ends.
fn trickle_until_closed(mut s: TcpStream, start: &[u8], what: &str) {
    s.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    s.write_all(start).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 1024];
    loop {
        match read_some(&mut s, &mut buf) {
            Ok(0) => return,
            Ok(_) => {} // a 408 may precede the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return, // reset
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still open after {DEADLINE:?} of trickling"
        );
        if s.write_all(b"x").is_err() {
            return;
        }
    }
}

/// Fault model: slowloris. A client trickles its request head (one byte at a time, each
/// within pingora's per-read timeout), before its first request or after a response on a
/// keep-alive connection, on the proxy and on the admin listener (which had no deadline at
/// all). Must hold: both close such a connection once `header_timeout` (1 s here) has
/// passed; a request whose head came in time is not cut by it, however slow its upstream.
#[test]
fn trickled_request_heads_are_closed_at_header_timeout_on_both_listeners() {
    let up = Upstream::start();
    up.set(
        "/public/slow",
        Reply::json(200, serde_json::json!({"slow": true})).delayed(Duration::from_secs(2)),
    );
    let gw = Gateway::start(
        &up.address(),
        &config("header_timeout = \"1s\"\n", "", "", ""),
        &base_policy(),
        &[],
    );
    let head = b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: ";
    trickle_until_closed(TcpStream::connect(gw.addr).unwrap(), head, "proxy, first head");
    trickle_until_closed(TcpStream::connect(gw.admin).unwrap(), head, "admin, first head");
    // after a response, the next head is under the same deadline
    for (addr, path, what) in [(gw.addr, "/health", "proxy"), (gw.admin, "/healthz", "admin")] {
        let mut conn = Conn::open(addr).unwrap();
        let r = conn.request("GET", path, &[], None).unwrap();
        assert_eq!(r.status, 200, "{what}: {r}");
        trickle_until_closed(conn.into_stream(), head, &format!("{what}, second head"));
    }
    // the deadline is on the head only: a 2 s upstream answer passes
    let r = gw.get("/public/slow", &[]);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
    assert_eq!(gw.get("/health", &[]).status, 200);
}

/// Fault model: many connections to the admin listener that never finish a head (a
/// slowloris, or a leaking client) exhausted file descriptors; and once the slots were
/// bounded, 64 clients that pipelined `/metrics` and never read (or tricklers) held every
/// slot, so `/healthz` and `authgate health` failed for as long as they stayed. Must hold:
/// at most `admin_max_connections` (4 here) are held; a new connection evicts the held one
/// that has gone longest without a request (docs/reference.md#admin-listener) and is served;
/// the evicted one is closed, the others are served when they finish their heads.
#[test]
fn the_admin_listener_holds_at_most_admin_max_connections() {
    let (_up, gw) = base_with(&config(
        "header_timeout = \"300s\"\nadmin_max_connections = 4\n",
        "",
        "",
        "",
    ));
    let partial = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n";
    // accepted in connect order, the kernel's accept queue being first in, first out
    let mut waiting: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = raw_connect(gw.admin);
            s.write_all(partial).unwrap();
            s
        })
        .collect();
    // every slot is held: a whole request still gets in, evicting the oldest holder
    let r = try_request(gw.admin, "GET", "/healthz", &[], None).expect("a new admin connection was refused");
    assert_eq!(r.status, 200, "{r}");
    let mut served = 0;
    for (i, s) in waiting.iter_mut().enumerate() {
        let _ = s.write_all(b"Connection: close\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 200") {
            served += 1;
        } else {
            assert!(text.is_empty(), "connection #{i}: {text:?}");
        }
    }
    assert_eq!(served, 3, "exactly the oldest holder was evicted");
    gw.wait_metric(
        "authgate_connections_closed_total",
        &[("listener", "admin"), ("reason", "evicted")],
        1.0,
    );
    // the slots are free again once those connections closed
    wait_for(DEADLINE, "the admin listener accepting again", || {
        try_request(gw.admin, "GET", "/healthz", &[], None)
            .ok()
            .filter(|r| r.status == 200)
    });
}
