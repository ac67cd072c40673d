//! End-to-end: the gateway reads a request the way the upstream will
//! (docs/reference.md#reading-requests) — framing (`Host`, `Content-Length` lists), held
//! bodies (what arrives decides, one `Content-Length` upstream, `Expect: 100-continue`,
//! `body_timeout`) — against the real binary and the recording upstream.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::common::*;

/// A spec with one operation that holds its JSON body and one that takes none.
const SPEC: &str = r#"openapi: 3.1.0
info: {title: edge, version: "1"}
paths:
  /edge/things:
    post:
      operationId: createThing
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              required: [name]
              properties:
                name: {type: string, maxLength: 20}
    get:
      operationId: listThings
  /edge/things/{id}/archive:
    post:
      operationId: archiveThing
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
"#;

fn config(server_extra: &str) -> String {
    let mut text = Cfg {
        server_extra: server_extra.into(),
        ..Cfg::default()
    }
    .render();
    text.push_str(
        "\n[[openapi]]\nspec = \"api.yaml\"\nvalidate = \"enforce\"\ndefaults = { auth = \"partner\", limits = [\"partner\"] }\n",
    );
    text
}

fn start(up: &Upstream, server_extra: &str) -> Gateway {
    Gateway::start(
        &up.address(),
        &config(server_extra),
        &base_policy(),
        &[("api.yaml", SPEC.as_bytes())],
    )
}

fn auth() -> String {
    format!("Authorization: Bearer {}\r\n", token("acme"))
}

/// Fault model: an HTTP/1.1 request without `Host` (or with two) was forwarded as it came,
/// and the upstream picked a virtual host of its own. Must hold (RFC 9112 §3.2): 400
/// `bad_request` in the §5 shape, nothing upstream (two `Host` lines: pingora's parser
/// answers its own bare 400 first); HTTP/1.0 may still omit it.
#[test]
fn an_http11_request_without_exactly_one_host_is_400() {
    let (up, gw) = base();
    let r = exchange_raw(gw.addr, b"GET /public/nohost HTTP/1.1\r\n\r\n").unwrap();
    assert_error(&r, 400, "no Host");
    gw.wait_denied("none", "bad_request", 1.0);
    let raw = b"GET /public/twohosts HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n";
    let r = exchange_raw(gw.addr, raw).unwrap();
    assert_eq!(r.status, 400, "two Hosts: {r}");
    assert_eq!(up.count(), 0, "forwarded");
    let r = exchange_raw(gw.addr, b"GET /public/http10 HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.count(), 1);
}

/// Fault model: `Content-Length: 12, 12` went upstream as the list, which some servers read
/// as invalid and others as 12; a list over `max_body_bytes` was not refused early because
/// the list did not parse. Must hold: a list of one repeated value reaches the upstream as
/// that one value, is checked against the limit at once (413 before the body is read), and
/// a list of different values is 400 (pingora's parser or ours), nothing upstream.
#[test]
fn a_content_length_list_is_forwarded_as_one_value_and_checked_at_once() {
    let up = Upstream::start();
    let gw = Gateway::start(
        &up.address(),
        &Cfg {
            max_body_bytes: 100,
            ..Cfg::default()
        }
        .render(),
        &base_policy(),
        &[],
    );
    for cl in ["12, 12", "12,12"] {
        let raw = format!(
            "POST /public/list HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\nConnection: close\r\n\r\nhello world!"
        );
        let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{cl}: {r}");
        let rec = up.last();
        assert_eq!(rec.all("content-length"), vec!["12"], "{cl}");
        assert_eq!(rec.body, b"hello world!");
    }
    let raw = "POST /public/two-lines HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().all("content-length"), vec!["5"]);
    let forwarded = up.count();

    // over the limit: refused before any body byte is sent
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"POST /public/big HTTP/1.1\r\nHost: x\r\nContent-Length: 500, 500\r\n\r\n")
        .unwrap();
    let r = read_one(&mut s);
    assert_error(&r, 413, "list over max_body_bytes");

    for raw in [
        "POST /public/differ HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello",
        "POST /public/differ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ] {
        let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{raw:?}: {r}");
    }
    assert_eq!(up.count(), forwarded, "nothing else reached the upstream");
}

/// Reads one response from a connection whose request is not finished (the client keeps
/// its side open, as a client waiting on `100 Continue` or sending a body slowly does).
fn read_one(s: &mut TcpStream) -> Response {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    read_one_response(s).unwrap()
}

/// Fault model: a chunked body on an operation that holds its body was forwarded re-chunked
/// (and, from HTTP/2, with two last-chunks that Node answers with a bare 400). Must hold: a
/// held body reaches the upstream with one `Content-Length` equal to the bytes held, no
/// `Transfer-Encoding`, byte for byte.
#[test]
fn a_held_chunked_body_is_forwarded_with_one_content_length() {
    let up = Upstream::start();
    let gw = start(&up, "");
    let body = br#"{"name":"widget"}"#;
    let raw = format!(
        "POST /edge/things HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        auth(),
        std::str::from_utf8(&body[..5]).unwrap(),
        body.len() - 5,
        std::str::from_utf8(&body[5..]).unwrap(),
    );
    let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{r}");
    let rec = up.last();
    assert_eq!(rec.body, body);
    assert_eq!(rec.all("content-length"), vec![body.len().to_string()]);
    assert!(rec.all("transfer-encoding").is_empty(), "{:?}", rec.headers);

    // and a chunked body that breaks the schema never arrives
    let bad = br#"{"name":"widget","role":"admin"}"#;
    let raw = format!(
        "POST /edge/things HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        auth(),
        bad.len(),
        std::str::from_utf8(bad).unwrap(),
    );
    let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(r.json()["errors"][0]["pointer"], "/role", "{r}");
    assert_eq!(up.count(), 1);
}

/// Fault model: a client that sends `Expect: 100-continue` on an operation whose body the
/// gateway holds waited for a `100` that never came (curl waits 1 s, others longer), because
/// the upstream that would have sent it is only contacted after the body. Must hold: the
/// gateway answers `100 Continue` itself once the head passed every step before 7a; a head
/// it refuses gets its final status and no `100`.
#[test]
fn expect_100_continue_on_a_held_body_is_answered_by_the_gateway() {
    let up = Upstream::start();
    let gw = start(&up, "");
    let body = br#"{"name":"widget"}"#;
    let mut s = TcpStream::connect(gw.addr).unwrap();
    write!(
        s,
        "POST /edge/things HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        auth(),
        body.len()
    )
    .unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body).unwrap();
    let r = read_one(&mut s);
    assert_eq!(r.status, 200, "{r}");
    let rec = up.last();
    assert_eq!(rec.body, body);
    assert!(rec.all("expect").is_empty(), "the upstream was asked to continue again");

    // refused before 7a (no token): the final answer, no 100
    let mut s = TcpStream::connect(gw.addr).unwrap();
    write!(
        s,
        "POST /edge/things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let r = read_one(&mut s);
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(up.count(), 1);
}

/// Fault model: a held body trickled one byte every 25 s kept its connection (and the worker's
/// memory for it) for hours: pingora bounds each read, not the whole body. Must hold: a held
/// body that has not fully arrived within `[server] body_timeout` of the head's end gets 408
/// and the connection is closed; nothing reaches the upstream.
#[test]
fn a_held_body_slower_than_body_timeout_is_408_and_closed() {
    let up = Upstream::start();
    let gw = start(&up, "body_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(gw.addr).unwrap();
    write!(
        s,
        "POST /edge/things HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{{\"na",
        auth()
    )
    .unwrap();
    // the rest never comes; the deadline, not this client, ends the exchange
    let r = read_one(&mut s);
    assert_error(&r, 408, "held body past body_timeout");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0, "connection left open");
    assert_eq!(up.count(), 0);
    gw.wait_denied("createThing", "request_timeout", 1.0);
}

/// Fault model: a streamed (not held) body that stalls held the client connection and the
/// upstream connection serving it for as long as the client liked. Must hold: a gap between
/// two reads of a streamed body longer than `body_timeout` cuts it: the client gets 408 when
/// nothing was sent to it yet, and the upstream request is aborted (its body never completes).
#[test]
fn a_streamed_body_that_stalls_past_body_timeout_is_cut() {
    let up = Upstream::start();
    let gw = start(&up, "body_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(gw.addr).unwrap();
    write!(
        s,
        "POST /public/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nfirst bytes"
    )
    .unwrap();
    let r = read_one(&mut s);
    assert_error(&r, 408, "streamed body stalled");
    let rec = up.wait_path("/public/stream");
    assert!(!rec.body_complete, "the upstream saw a complete body: {:?}", rec.body);
    gw.wait_denied("public", "request_timeout", 1.0);
}

/// Fault model: over HTTP/2 a body sent without `content-length` was neither held nor
/// validated (presence was read from the headers): the upstream got `{"role":"admin"}` on an
/// operation that takes no body, and a schema-breaking body on one that holds its body.
/// Must hold: what arrives decides — such a body is held and checked on every listener; a
/// valid one reaches the upstream once, with one `Content-Length`, never chunked.
#[test]
fn an_h2_body_without_content_length_is_held_and_validated() {
    let site = tls::Site::new();
    let up = Upstream::start();
    let gw = Gateway::start(
        &up.address(),
        &tls::with_tls(&config("")),
        &base_policy(),
        &[site.files(), vec![("api.yaml", SPEC.as_bytes())]].concat(),
    );
    let client = site.client(b"h2");
    let auth = format!("Bearer {}", token("acme"));
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let post = |target: &str, body: &[u8]| {
        tls::h2_request(gw.addr, client.clone(), "POST", target, &headers, Some(body)).unwrap()
    };

    let r = post("/edge/things/t1/archive", br#"{"role":"admin"}"#);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    assert_eq!(
        r.json()["errors"][0]["message"],
        "this operation takes no body",
        "{r:?}"
    );
    let r = post("/edge/things", br#"{"name":{"$ne":null}}"#);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(up.count(), 0, "a refused body reached the upstream");

    let body = br#"{"name":"widget"}"#;
    let r = post("/edge/things", body);
    assert_eq!(r.status, 200, "{r:?}");
    let rec = up.last();
    assert_eq!(rec.body, body);
    assert!(rec.body_complete);
    assert_eq!(rec.all("content-length"), vec![body.len().to_string()]);
    assert!(rec.all("transfer-encoding").is_empty(), "{:?}", rec.headers);
    // an operation without a body still takes a request without one
    let r = tls::h2_request(
        gw.addr,
        client.clone(),
        "POST",
        "/edge/things/t1/archive",
        &headers,
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.count(), 2);
}

/// Fault model: `/users/regist%65r` was checked as `register` and run by Express as
/// `/users/:userId` (Starlette decodes first and agrees with the gateway; Express does not):
/// routers disagree on whether an encoded unreserved character is that character. Must hold:
/// such a path is 400 `bad_path` anywhere on a spec operation, on a path that matches no
/// route (not 404), and outside the `{name}` captures of a `[[routes]]` entry (the
/// `login-links` limit cannot be dodged as `login-link%73`); a `[[routes]]` capture is still
/// compared percent-decoded (§4 step 7), and reserved characters (`%20`) stay encodable.
#[test]
fn percent_encoded_unreserved_characters_are_refused_where_routers_disagree() {
    let up = Upstream::start();
    let gw = start(&up, "");
    let tok = token("acme");
    let org = ORG_ACME;
    for (method, path) in [
        ("POST", format!("/partner/v1/orgs/{org}/login-link%73")),
        ("GET", format!("/partner/v1/orgs/{org}/x%2Dy")),
        ("GET", "/partner/v1/orgs/by-external-i%64/x".to_string()),
        ("GET", "/edge/thing%73".to_string()),
        ("POST", "/edge/things/t%31/archive".to_string()),
        ("GET", "/nowhere/%41".to_string()),
    ] {
        let r = gw.req(method, &path, &[("Authorization", &bearer(&tok))], None);
        assert_error(&r, 400, &path);
        assert!(
            r.json()["message"].as_str().unwrap().contains("never encoded"),
            "{path}: {r}"
        );
    }
    assert_eq!(up.count(), 0);
    gw.wait_denied("none", "bad_path", 6.0);

    let encoded_org: String = org.bytes().map(|b| format!("%{b:02X}")).collect();
    for path in [
        format!("/partner/v1/orgs/{encoded_org}/x"),
        "/partner/v1/orgs/by-external-id/cust%20omer".to_string(),
    ] {
        let r = gw.get_auth(&path, &tok, &[]);
        assert_eq!(r.status, 200, "{path}: {r}");
        assert_eq!(up.last().target, path, "forwarded as received");
    }
}

/// Fault model: report mode answered 413 to a valid 104 KB body: the hold limit (pingora's
/// 64 KiB retry buffer) refused what `validate = "off"` would have forwarded. Must hold: under
/// `report`, a body over `held_body_max` reaches the upstream whole and unchecked, with its
/// own framing (declared length or chunked), counted as `body_not_checked`; under `enforce`
/// the same body is 413 and nothing reaches the upstream.
#[test]
fn a_body_over_held_body_max_is_forwarded_unchecked_under_report_and_413_under_enforce() {
    let up = Upstream::start();
    let mut text = base_config();
    text.push_str(
        "\n[[openapi]]\nspec = \"api.yaml\"\nvalidate = \"report\"\nheld_body_max = \"16KiB\"\ndefaults = { auth = \"none\" }\n",
    );
    let gw = Gateway::start(&up.address(), &text, &base_policy(), &[("api.yaml", SPEC.as_bytes())]);
    let big = format!(r#"{{"name":"{}"}}"#, "n".repeat(100_000));
    let json = [("Content-Type", "application/json")];
    let r = gw.req("POST", "/edge/things", &json, Some(big.as_bytes()));
    assert_eq!(r.status, 200, "{r}");
    let rec = up.last();
    assert_eq!(rec.body.len(), big.len());
    assert_eq!(rec.all("content-length"), vec![big.len().to_string()]);

    // chunked, in pieces: the part read before the limit passed goes first
    let mut raw = "POST /edge/things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_string();
    for piece in big.as_bytes().chunks(7000) {
        raw.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    raw.push_str("0\r\n\r\n");
    let r = exchange_raw(gw.addr, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{r}");
    let rec = up.last();
    assert!(rec.body_complete);
    assert_eq!(rec.body, big.as_bytes(), "the chunked body arrived changed");
    gw.wait_metric(
        "authgate_validation_failures_total",
        &[("route", "createThing"), ("location", "body_not_checked")],
        2.0,
    );

    let enforce = Gateway::start(
        &up.address(),
        &edited(&text, "validate = \"report\"", "validate = \"enforce\""),
        &base_policy(),
        &[("api.yaml", SPEC.as_bytes())],
    );
    let before = up.count();
    let r = enforce.req("POST", "/edge/things", &json, Some(big.as_bytes()));
    assert_error(&r, 413, "over held_body_max under enforce");
    assert_eq!(up.count(), before);
}
