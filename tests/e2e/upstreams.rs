//! End-to-end: upstream clusters (docs/reference.md#upstream-clusters) against the real binary, with real
//! backends on free ports: round robin, least connections and consistent hashing, health
//! checks taking a killed backend out and bringing it back, the one retry on a connect
//! failure (and none once the request was sent), two clusters behind one gateway, and a
//! streaming route whose `read_timeout` outlives its cluster's.
//!
//! Figures measured along the way are printed (`cargo test -- --nocapture` shows them);
//! assertions never depend on them except where the behaviour under test is a timeout.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

/// Health checks fast enough for a test: out after 2 failed probes, back after 2 passes.
/// The probe timeout is generous so that a loaded machine never fails a live backend (a
/// dead one refuses the connect at once, a sick one answers 503 at once).
const HEALTH: &str = r#"health_check = { path = "/health", interval = "150ms", timeout = "3s", unhealthy_after = 2, healthy_after = 2 }"#;

/// A `[[upstreams]]` table.
fn cluster(name: &str, backends: &[String], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{b:?}")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbackends = [{}]\n{extra}\n\n",
        list.join(", ")
    )
}

fn addrs(backends: &[&Upstream]) -> Vec<String> {
    backends.iter().map(|b| b.address()).collect()
}

/// A gateway on the base config with `upstreams` instead of `[upstream]`.
fn gateway(upstreams: String, routes_extra: &str) -> Gateway {
    let cfg = Cfg {
        upstreams,
        routes_extra: routes_extra.into(),
        ..Cfg::default()
    }
    .render();
    Gateway::start("unused", &cfg, &base_policy(), &[])
}

/// Backends "a" and "b" as the cluster "default" (with `extra` lines), behind a gateway.
fn two_backends(extra: &str) -> (Upstream, Upstream, Gateway) {
    let a = Upstream::backend("a");
    let b = Upstream::backend("b");
    let gw = gateway(cluster("default", &addrs(&[&a, &b]), extra), "");
    (a, b, gw)
}

/// `authgate_upstream_backend_healthy` of one backend.
fn healthy(gw: &Gateway, upstream: &str, backend: &str) -> f64 {
    let m = gw.metrics();
    let labels = [("upstream", upstream), ("backend", backend)];
    let sample = m.matching("authgate_upstream_backend_healthy", &labels).next();
    sample
        .unwrap_or_else(|| panic!("no health gauge for {upstream}/{backend}"))
        .value
}

fn wait_healthy(gw: &Gateway, upstream: &str, backend: &str, want: f64) {
    wait_for(DEADLINE, &format!("{upstream}/{backend} healthy = {want}"), || {
        (healthy(gw, upstream, backend) == want).then_some(())
    });
}

/// GET that must be proxied with 200; returns the backend that answered.
fn ok_from(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> String {
    let r = gw.get(path, headers);
    assert_eq!(r.status, 200, "{path}: {r}");
    r.header("x-backend")
        .unwrap_or_else(|| panic!("{path}: no X-Backend: {r}"))
        .to_string()
}

// ------------------------------------------------------------------------------------
// selection
// ------------------------------------------------------------------------------------

#[test]
fn round_robin_gives_each_of_two_backends_half_of_100_requests() {
    let (a, b, gw) = two_backends("selection = \"round_robin\"");
    for i in 0..100 {
        ok_from(&gw, &format!("/public/rr/{i}"), &[]);
    }
    let (na, nb) = (a.count(), b.count());
    println!("round robin over 100 requests: a={na} b={nb}");
    assert_eq!(na + nb, 100);
    assert!(na.abs_diff(50) <= 1 && nb.abs_diff(50) <= 1, "a={na} b={nb}");
    let m = gw.metrics();
    assert!(
        m.sum(
            "authgate_upstream_duration_seconds_count",
            &[("route", "public"), ("upstream", "default")]
        ) >= 100.0,
        "upstream label on the upstream histogram:\n{}",
        m.text
    );
    for backend in [&a, &b] {
        assert_eq!(healthy(&gw, "default", &backend.address()), 1.0);
    }
}

#[test]
fn consistent_hash_keeps_each_client_ip_on_one_backend() {
    let (_a, _b, gw) = two_backends("selection = \"consistent_hash\"");
    let mut per_backend = std::collections::HashMap::<String, usize>::new();
    for i in 1..=40 {
        let ip = format!("203.0.113.{i}");
        let first = ok_from(&gw, "/public/h", &[("X-Forwarded-For", &ip)]);
        for _ in 0..4 {
            let again = ok_from(&gw, "/public/h", &[("X-Forwarded-For", &ip)]);
            assert_eq!(again, first, "client {ip} moved from {first} to {again}");
        }
        *per_backend.entry(first).or_default() += 1;
    }
    println!("consistent hash, 40 client IPs x 5 requests: {per_backend:?}");
    assert_eq!(
        per_backend.len(),
        2,
        "40 client IPs all hashed to one backend: {per_backend:?}"
    );
}

#[test]
fn least_conn_sends_new_requests_to_the_backend_without_one_in_flight() {
    let (a, b, gw) = two_backends("selection = \"least_conn\"");
    let addr = gw.addr;
    let held = std::thread::spawn(move || request(addr, "GET", "/public/held", &[], None));
    let busy = wait_for(DEADLINE, "the held request to reach a backend", || {
        match (a.count_suffix("/held"), b.count_suffix("/held")) {
            (1, 0) => Some("a"),
            (0, 1) => Some("b"),
            _ => None,
        }
    });
    let idle = if busy == "a" { "b" } else { "a" };
    for i in 0..10 {
        let got = ok_from(&gw, &format!("/public/lc/{i}"), &[]);
        assert_eq!(got, idle, "request {i} went to {got}, which has one in flight");
    }
    a.release();
    b.release();
    let r = held.join().unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-backend"), Some(busy));
    // with nothing in flight, both take requests again
    let picks: Vec<String> = (0..4).map(|_| ok_from(&gw, "/public/lc", &[])).collect();
    assert!(
        picks.iter().any(|p| p == "a") && picks.iter().any(|p| p == "b"),
        "{picks:?}"
    );
}

// ------------------------------------------------------------------------------------
// health checks and the retry
// ------------------------------------------------------------------------------------

#[test]
fn a_killed_backend_costs_no_client_an_error_is_taken_out_and_comes_back() {
    let (a, mut b, gw) = two_backends(HEALTH);
    let b_addr: SocketAddr = b.addr;
    let b_label = b.address();
    // `/close`: the backends close each connection after answering, so the gateway holds no
    // pooled keep-alive connection to b when it dies. A request sent on such a connection
    // before pingora saw it close would be a 502 by contract (nothing is retried once a byte
    // of the request left the gateway); that race is not what this test is about.
    for i in 0..10 {
        ok_from(&gw, &format!("/public/warm/{i}/close"), &[]);
    }
    assert_eq!((a.count(), b.count()), (5, 5), "both in rotation before the kill");

    // Kill b. Traffic is sequential, so nothing is in flight to it as it dies. Until its
    // health check takes it out, requests that pick it are refused at connect and retried
    // on a: every client gets a 200.
    b.kill();
    let killed = Instant::now();
    let mut during = 0;
    loop {
        let got = ok_from(&gw, &format!("/public/during/{during}"), &[]);
        assert_eq!(got, "a");
        during += 1;
        if healthy(&gw, "default", &b_label) == 0.0 {
            break;
        }
        assert!(killed.elapsed() < DEADLINE, "b never marked unhealthy");
    }
    println!(
        "b killed: out of rotation after {:?} (unhealthy_after = 2, interval = 150ms); {during} requests in between, all 200",
        killed.elapsed()
    );

    // b's port answers again but fails its health check (503): it stays out, and no
    // request reaches it although it accepts connections.
    let mut sick = Upstream::backend_on("b-sick", b_addr, true);
    wait_for(DEADLINE, "health checks of the sick b", || {
        (sick.health_checks() >= 2).then_some(())
    });
    for i in 0..20 {
        assert_eq!(ok_from(&gw, &format!("/public/out/{i}"), &[]), "a");
    }
    assert_eq!(sick.count(), 0, "an unhealthy backend got requests");
    assert_eq!(healthy(&gw, "default", &b_label), 0.0);
    sick.kill();

    // b comes back healthy: in rotation again after healthy_after passes.
    let b2 = Upstream::backend_on("b", b_addr, false);
    let revived = Instant::now();
    wait_healthy(&gw, "default", &b_label, 1.0);
    println!("b back: in rotation after {:?} (healthy_after = 2)", revived.elapsed());
    for i in 0..20 {
        ok_from(&gw, &format!("/public/back/{i}"), &[]);
    }
    println!("after its return, b got {} of 20 requests", b2.count());
    assert!(b2.count() >= 9, "b got {} of 20 after coming back", b2.count());
}

#[test]
fn all_backends_down_is_502_upstream_unavailable() {
    let dead = vec![closed_addr(), closed_addr()];
    let gw = gateway(cluster("default", &dead, HEALTH), "");
    // before the health checks decide: both connects refused (the first one retried)
    let r = gw.get("/public/x", &[]);
    assert_error(&r, 502, "every backend refuses");
    for d in &dead {
        wait_healthy(&gw, "default", d, 0.0);
    }
    // after: no eligible backend at all
    let r = gw.get_auth("/partner/v1/orgs/by-external-id/x", &token("acme"), &[]);
    assert_error(&r, 502, "every backend out of rotation");
    let r = gw.get("/public/y", &[]);
    assert_error(&r, 502, "every backend out of rotation, auth none");
    gw.wait_metric("authgate_denied_total", &[("reason", "upstream_unavailable")], 3.0);
}

#[test]
fn a_refused_connect_is_retried_once_on_another_backend_body_and_all() {
    let b = Upstream::backend("b");
    let dead = closed_addr();
    // no health check: the dead backend stays in rotation, so every other request picks it
    let gw = gateway(cluster("default", &[dead, b.address()], ""), "");
    for i in 0..6 {
        let body = format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(2000));
        let r = gw.req(
            "POST",
            format!("/public/post/{i}"),
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 200, "POST {i}: {r}");
        assert_eq!(r.header("x-backend"), Some("b"));
        let hit = b.records().pop().unwrap();
        assert_eq!(hit.method, "POST");
        assert_eq!(hit.body, body.as_bytes(), "the retried request carries the whole body");
        assert_eq!(
            hit.one("x-forwarded-for"),
            Some("127.0.0.1"),
            "the gateway's headers are set once, not once per attempt"
        );
    }
    assert_eq!(b.count(), 6, "each request reached b exactly once");
}

#[test]
fn a_request_that_reached_a_backend_is_never_sent_again() {
    let (a, b, gw) = two_backends("");
    // warm the connection pool: the next request to each backend reuses a connection,
    // where pingora's default policy would retry an idempotent request that fails
    for i in 0..4 {
        ok_from(&gw, &format!("/public/warm/{i}"), &[]);
    }
    let r = gw.get("/public/drop", &[]);
    assert_error(&r, 502, "backend closed the connection without answering");
    assert_eq!(
        a.count_suffix("/drop") + b.count_suffix("/drop"),
        1,
        "the request was sent to a second backend"
    );
    // and both stay usable
    for i in 0..4 {
        ok_from(&gw, &format!("/public/after/{i}"), &[]);
    }
}

// ------------------------------------------------------------------------------------
// clusters and routes
// ------------------------------------------------------------------------------------

const ORG_ROUTE: &str = r#"
[[routes]]
name = "org-info"
path = "/org"
method = "GET"
auth = "org"
upstream = "org-api"
"#;

#[test]
fn two_clusters_each_route_reaches_its_own_with_the_gateway_headers() {
    let partner = Upstream::backend("partner-1");
    let org = Upstream::backend("org-1");
    let upstreams = format!(
        "{}{}",
        cluster("default", &addrs(&[&partner]), ""),
        cluster("org-api", &addrs(&[&org]), HEALTH)
    );
    let mut gw = gateway(upstreams, ORG_ROUTE);
    let client = [("X-Forwarded-For", "203.0.113.7"), ("X-Request-Id", "req-clusters-1")];

    let r = gw.get_auth("/partner/v1/orgs/by-external-id/c-1", &token("acme"), &client);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-backend"), Some("partner-1"));
    let hit = partner.records().pop().unwrap();
    assert_eq!(hit.one("x-partner-id"), Some("acme"));
    assert_eq!(hit.one("x-org-id"), None);

    let org_token = sign_cfg(Key::Hs, &org_claims("org-77"));
    let r = gw.get_auth("/org", &org_token, &client);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-backend"), Some("org-1"));
    let org_hit = org.records().pop().unwrap();
    assert_eq!(org_hit.one("x-org-id"), Some("org-77"));
    assert_eq!(org_hit.one("x-partner-id"), None);

    // the gateway headers (docs/reference.md#upstream-request) on both clusters
    for (what, h) in [("partner cluster", &hit), ("org cluster", &org_hit)] {
        assert_eq!(h.one("x-real-ip"), Some("203.0.113.7"), "{what}");
        assert_eq!(h.one("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"), "{what}");
        assert_eq!(h.one("x-request-id"), Some("req-clusters-1"), "{what}");
    }
    assert_eq!(partner.count(), 1, "nothing crossed over");
    assert_eq!(org.count(), 1, "nothing crossed over");

    let m = gw.metrics();
    for (route, upstream) in [("by-external-id", "default"), ("org-info", "org-api")] {
        assert_eq!(
            m.sum(
                "authgate_upstream_duration_seconds_count",
                &[("route", route), ("upstream", upstream)]
            ),
            1.0,
            "{route} -> {upstream}:\n{}",
            m.text
        );
    }
    assert_eq!(healthy(&gw, "org-api", &org.address()), 1.0);
    assert_eq!(healthy(&gw, "default", &partner.address()), 1.0);

    // SIGHUP reloads the policy and leaves the clusters as they are (§8, §12)
    gw.signal("HUP");
    gw.wait_metric("authgate_config_reloads_total", &[("result", "success")], 1.0);
    let r = gw.get_auth("/org", &org_token, &client);
    assert_eq!(r.header("x-backend"), Some("org-1"), "{r}");
    // and SIGTERM drains and exits 0 with the health checks running
    let status = gw.stop(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
}

/// Reads a server-sent-event response off a raw connection, event by event, as it
/// arrives (chunked or read-to-close).
struct EventReader {
    stream: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    chunked: bool,
    done: bool,
}

impl EventReader {
    fn open(addr: SocketAddr, path: &str) -> (u16, String, EventReader) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = EventReader {
            stream,
            raw: Vec::new(),
            body: Vec::new(),
            chunked: false,
            done: false,
        };
        let end = loop {
            if let Some(i) = r.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(r.fill(), "connection closed before the response head");
        };
        let head = String::from_utf8_lossy(&r.raw[..end]).into_owned();
        r.raw.drain(..end + 4);
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        r.chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        (status, head, r)
    }

    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let n = read_some(&mut self.stream, &mut buf).unwrap();
        self.raw.extend_from_slice(&buf[..n]);
        n > 0
    }

    /// Moves complete chunks from `raw` to `body`; whether it made progress.
    fn decode(&mut self) -> bool {
        if !self.chunked {
            let moved = !self.raw.is_empty();
            self.body.append(&mut self.raw);
            return moved;
        }
        let mut progressed = false;
        while let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                self.done = true;
                return true;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                break;
            }
            self.body.extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
            progressed = true;
        }
        progressed
    }

    /// The next event, or `None` at the proper end of the stream. Panics when the
    /// connection is cut before the stream ended.
    fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.body.windows(2).position(|w| w == b"\n\n") {
                let event = String::from_utf8_lossy(&self.body[..i]).into_owned();
                self.body.drain(..i + 2);
                return Some(event);
            }
            if self.done {
                return None;
            }
            if !self.decode() && !self.fill() {
                assert!(!self.chunked, "the stream was cut before its last chunk");
                return None;
            }
        }
    }
}

#[test]
fn a_streaming_route_outlives_the_cluster_read_timeout_and_ordinary_routes_do_not() {
    let b = Upstream::backend("b");
    b.set_events(EventPlan {
        count: 3,
        gap: Duration::from_secs(2),
    });
    let routes = r#"
[[routes]]
name = "stream"
path = "/v1/stream/**"
auth = "none"
read_timeout = "10s"
"#;
    let gw = gateway(cluster("default", &addrs(&[&b]), "read_timeout = \"1s\""), routes);

    // The stream: 3 events 2 s apart, longer than the cluster's 1 s. The backend sends
    // event n+1 only after the test has received event n, so an event held back by the
    // gateway would stall the stream: each one arrives as it is sent.
    let (status, head, mut events) = EventReader::open(gw.addr, "/v1/stream/events");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("text/event-stream"), "{head}");
    let mut arrivals = Vec::new();
    let started = Instant::now();
    for n in 1..=3 {
        let event = events.next_event().expect("an event");
        arrivals.push(started.elapsed());
        assert_eq!(event, format!("id: {n}\ndata: event {n}"));
        assert_eq!(b.sent(), n, "event {n} arrived after a later one was sent");
        b.ack(n);
    }
    assert_eq!(events.next_event(), None, "the stream ends cleanly after 3 events");
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    println!("stream through a 1s cluster with a 10s route: events at {arrivals:?}, gaps {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_secs(1)),
        "the events were not spaced beyond the cluster's 1s timeout: {gaps:?}"
    );

    // An ordinary route of the same cluster keeps the cluster's 1 s.
    let started = Instant::now();
    let r = gw.get("/public/hang", &[]);
    let waited = started.elapsed();
    println!("ordinary route, hung upstream: {} after {waited:?}", r.status);
    assert_error(&r, 504, "hung upstream on an ordinary route");
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(9),
        "504 after {waited:?}: the cluster's 1s, not the stream route's 10s or a hang"
    );
    assert_eq!(b.count_suffix("/hang"), 1);
}

// ------------------------------------------------------------------------------------
// config
// ------------------------------------------------------------------------------------

#[test]
fn check_reports_every_cluster_problem_with_its_line() {
    let upstreams = format!(
        "{}{}",
        cluster(
            "default",
            &["127.0.0.1:7001".into(), "no-such-host.invalid:80".into()],
            "selection = \"fastest\""
        ),
        cluster("org-api", &["127.0.0.1:7002".into()], "read_timeout = \"0s\"")
    );
    let routes = r#"
[[routes]]
name = "to-nowhere"
path = "/nowhere"
auth = "none"
upstream = "billing"
"#;
    let config = Cfg {
        upstreams,
        routes_extra: routes.into(),
        ..Cfg::default()
    }
    .render();
    let out = ConfDir::base_policy("check-upstreams", &config).check();
    assert_eq!(out.code(), Some(1), "{}", out.all());
    let text = out.all();
    for (needle, words) in [
        ("selection = \"fastest\"", "selection \"fastest\""),
        ("no-such-host.invalid", "does not resolve"),
        ("read_timeout = \"0s\"", "must be more than 0"),
        ("upstream = \"billing\"", "\"billing\" is not a defined cluster"),
    ] {
        let want = format!("authgate.toml:{}: ", line_of(&config, needle));
        assert!(
            text.lines().any(|l| l.contains(&want) && l.contains(words)),
            "wanted {want}…{words} in:\n{text}"
        );
    }
}

#[test]
fn check_refuses_two_defaults_and_a_config_without_any_upstream() {
    // [upstream] is the cluster "default": an [[upstreams]] "default" beside it is a clash
    let both = Cfg {
        routes_extra: format!("\n{}", cluster("default", &["127.0.0.1:7003".into()], "")),
        ..Cfg::default()
    }
    .render()
    .replace("{upstream}", "127.0.0.1:7004");
    let out = ConfDir::base_policy("check-upstreams", &both).check();
    assert_eq!(out.code(), Some(1), "{}", out.all());
    let want = format!(
        "authgate.toml:{}: ",
        both.lines()
            .enumerate()
            .filter(|(_, l)| l.contains("name = \"default\""))
            .map(|(i, _)| i + 1)
            .next()
            .unwrap()
    );
    assert!(
        out.all().contains(&want) && out.all().contains("already defined by [upstream]"),
        "{}",
        out.all()
    );

    // neither form: refused, and routes are not blamed for it
    let neither = base_config()
        .replace("[upstream]\naddress = \"{upstream}\"\ntls = false\n", "")
        .replace("connect_timeout = \"2s\"\nread_timeout = \"30s\"\n", "");
    assert!(!neither.contains("[upstream]"));
    let out = ConfDir::base_policy("check-upstreams", &neither).check();
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.all().contains("an upstream is required"), "{}", out.all());
    assert!(!out.all().contains("is not a defined cluster"), "{}", out.all());

    // routes without `upstream` need a cluster named "default"
    let unnamed = Cfg {
        upstreams: cluster("partner-api", &["127.0.0.1:7005".into()], ""),
        ..Cfg::default()
    }
    .render();
    let out = ConfDir::base_policy("check-upstreams", &unnamed).check();
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(
        out.all().contains("upstream \"default\" is not a defined cluster"),
        "{}",
        out.all()
    );
}
