//! End-to-end: the upstream's OpenAPI spec as the policy (docs/reference.md#openapi): routes
//! compiled from a spec, 404/405 as routing outcomes, and requests validated at the edge
//! (step 7a), against the real binary and an upstream that records what it received.

use crate::common::*;
use serde_json::{json, Value};

/// A spec with every kind of check: body schema, query, header and path parameters, an
/// operation without a body, a literal segment beside a template, and route keys set by
/// `x-authgate`.
const SPEC: &str = r#"openapi: 3.1.0
info: {title: things, version: "1"}
paths:
  /things:
    post:
      operationId: createThing
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/NewThing'}
    get:
      operationId: listThings
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
        - {name: X-Trace, in: header, required: true, schema: {type: string, pattern: '^[a-z]+$'}}
  /things/by-name/{name}:
    get:
      operationId: byName
      parameters:
        - {name: name, in: path, required: true, schema: {type: string, maxLength: 8}}
  /things/{orgId}/links:
    post:
      operationId: createLink
      x-authgate: {org_param: orgId, limits: [partner, tiny]}
      parameters:
        - {name: orgId, in: path, required: true, schema: {type: string}}
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [email]
              properties: {email: {type: string, format: email}}
  /things/{orgId}/ping:
    post:
      operationId: ping
      x-authgate: {org_param: orgId}
      parameters:
        - {name: orgId, in: path, required: true, schema: {type: string}}
  /simple:
    get:
      operationId: simpleShape
      x-authgate: {error_format: simple}
      parameters:
        - {name: n, in: query, required: true, schema: {type: integer}}
components:
  schemas:
    NewThing:
      type: object
      required: [name, email]
      properties:
        name: {type: string, minLength: 1}
        email: {type: string, format: email}
        size: {type: integer, maximum: 10}
        tags: {type: array, items: {type: integer}}
"#;

/// The base config with the spec as `[[openapi]]` (`validate` as given), a `tiny` limit, a
/// hand-written route that overlaps a spec path, and an overlay for `ping`.
fn config(validate: &str) -> String {
    let mut text = Cfg {
        limits_extra: "\n[[limits]]\nname = \"tiny\"\nper_minute = 7\n".into(),
        routes_extra: "\n[[routes]]\nname = \"hand\"\npath = \"/things/by-name/hand\"\nauth = \"none\"\n".into(),
        ..Cfg::default()
    }
    .render();
    text.push_str(&format!(
        r#"
[[openapi]]
spec = "api.yaml"
validate = "{validate}"
defaults = {{ auth = "partner", limits = ["partner"] }}

[[openapi.operations]]
id = "ping"
limits = ["tiny"]
"#
    ));
    text
}

fn start(up: &Upstream, validate: &str) -> Gateway {
    Gateway::start(
        &up.address(),
        &config(validate),
        &base_policy(),
        &[("api.yaml", SPEC.as_bytes())],
    )
}

fn post_json(gw: &Gateway, path: &str, body: &[u8]) -> Response {
    let auth = bearer(&token("acme"));
    gw.req(
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(body),
    )
}

/// Waits until `route` has answered `n` requests (counted once the response is out).
fn requests(gw: &Gateway, route: &str, n: f64) {
    let v = gw.wait_metric("authgate_requests_total", &[("route", route)], n);
    assert_eq!(v, n, "{route}");
}

/// The refusal of step 7a: status, the DTO with `errors[]`, and its message.
fn assert_invalid(r: &Response, status: u16, message: &str, errors: Value) {
    assert_eq!(r.status, status, "{r}");
    assert!(!r.proxied(), "answered by the upstream: {r}");
    let v = r.json();
    assert_eq!(v["statusCode"], status, "{r}");
    assert_eq!(v["message"], message, "{r}");
    assert_eq!(v["errors"], errors, "{r}");
}

/// What must hold: every spec operation is a route named by its `operationId`, with its
/// route keys merged from `defaults`, `x-authgate` and the overlay (limits show in
/// `X-RateLimit-Limit`); a literal segment beats a template; a hand-written `[[routes]]`
/// entry is tried first and wins; a request the spec declares valid is forwarded.
#[test]
fn spec_operations_are_routes_named_by_operation_id() {
    let up = Upstream::start();
    let gw = start(&up, "enforce");
    let tok = token("acme");
    let trace = [("X-Trace", "abc")];

    let r = post_json(&gw, "/things", br#"{"name":"a","email":"a@example.com"}"#);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("100"),
        "defaults: the partner limit"
    );
    requests(&gw, "createThing", 1.0);

    let r = gw.get_auth("/things?limit=5", &tok, &trace);
    assert_eq!(r.status, 200, "{r}");
    requests(&gw, "listThings", 1.0);

    // x-authgate replaces the defaults' limits; the overlay replaces them again (list for list)
    let r = post_json(
        &gw,
        &format!("/things/{ORG_ACME}/links"),
        br#"{"email":"a@example.com"}"#,
    );
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (200, Some("7")), "{r}");
    let auth = bearer(&tok);
    let r = gw.req(
        "POST",
        format!("/things/{ORG_ACME}/ping"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (200, Some("7")), "{r}");
    // org_param from x-authgate: another partner's org is refused
    let r = gw.req(
        "POST",
        format!("/things/{ORG_GLOBEX}/ping"),
        &[("Authorization", &auth)],
        None,
    );
    assert_error(&r, 403, "org_param named by x-authgate");

    // the literal "by-name" beats the template {orgId} at that segment
    assert_eq!(gw.get_auth("/things/by-name/abc", &tok, &[]).status, 200);
    requests(&gw, "byName", 1.0);
    // [[routes]] first: the hand route takes this path without any token
    let r = gw.get("/things/by-name/hand", &[]);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
    requests(&gw, "hand", 1.0);
    assert_eq!(up.count(), 6);
}

/// What must hold: a path the spec documents with a method it does not is a 405 with the
/// documented methods in `Allow` (HEAD where GET is documented), before authentication; HEAD
/// takes the GET operation with its checks; a path the spec lacks is 404.
#[test]
fn undocumented_methods_are_405_with_allow_before_authentication() {
    let up = Upstream::start();
    let gw = start(&up, "enforce");
    let r = gw.req("DELETE", "/things", &[], None);
    assert_error(&r, 405, "an undocumented method");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    let r = gw.req("PUT", "/things/by-name/abc", &[], None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")), "{r}");
    // HEAD is the GET operation: authentication first, then its checks
    let r = gw.req("HEAD", "/things/by-name/abc", &[], None);
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")), "{r}");
    assert_error(&gw.get("/nothing/here", &[]), 404, "not in the spec");
    let denied = gw.wait_metric(
        "authgate_denied_total",
        &[("reason", "method_not_allowed"), ("route", "none")],
        2.0,
    );
    assert_eq!(denied, 2.0);
    assert_eq!(up.count(), 0);
}

/// Fault: requests that break the operation's contract (a missing or mistyped property, an
/// out-of-range query parameter, a missing header, a too-long path parameter, a body that is
/// not JSON or not declared, a wrong media type). What must hold: each gets 400
/// `invalid_request` (415 for the media type) with a `message` naming the first failure and
/// `errors[]` (at most 10), and nothing of it reaches the upstream: no connection at all.
#[test]
fn invalid_requests_are_refused_at_the_edge_and_never_reach_the_upstream() {
    let up = Upstream::start();
    let gw = Gateway::start(
        &up.address(),
        &config("enforce"),
        &base_policy(),
        &[("api.yaml", SPEC.as_bytes())],
    );
    let tok = token("acme");
    let auth = bearer(&tok);

    let r = post_json(&gw, "/things", br#"{"name":"a"}"#);
    assert_invalid(
        &r,
        400,
        "Invalid request body: /email is required",
        json!([{"in": "body", "pointer": "/email", "message": "is required"}]),
    );
    let r = post_json(&gw, "/things", br#"{"name":"a","email":"a@example.com","size":11}"#);
    assert_eq!(r.json()["errors"][0]["pointer"], "/size", "{r}");
    let r = gw.get_auth("/things?limit=5000", &tok, &[("X-Trace", "abc")]);
    assert_invalid(
        &r,
        400,
        "Invalid query parameter limit: must be at most 100",
        json!([{"in": "query", "pointer": "limit", "message": "must be at most 100"}]),
    );
    let r = gw.get_auth("/things", &tok, &[]);
    assert_eq!(
        (r.status, r.json()["errors"][0]["in"].clone()),
        (400, json!("header")),
        "{r}"
    );
    let r = gw.get_auth("/things/by-name/much-too-long", &tok, &[]);
    assert_eq!(
        (r.status, r.json()["errors"][0]["in"].clone()),
        (400, json!("path")),
        "{r}"
    );
    let r = gw.req(
        "POST",
        "/things",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        Some(b"hello"),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (415, json!("Unsupported Media Type")),
        "{r}"
    );
    let r = gw.req("POST", "/things", &[("Authorization", &auth)], Some(br#"{"name":"a"}"#));
    assert_eq!(r.status, 415, "a body without Content-Type: {r}");
    assert_eq!(post_json(&gw, "/things", b"{not json").status, 400);
    assert_eq!(post_json(&gw, "/things", b"").status, 400, "a required body");
    let r = gw.req(
        "POST",
        format!("/things/{ORG_ACME}/ping"),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(r.status, 400, "a body where the operation declares none: {r}");
    // twelve failing values: the first ten are listed
    let tags: Vec<String> = (0..12).map(|i| format!("\"t{i}\"")).collect();
    let body = format!(r#"{{"name":"a","email":"a@example.com","tags":[{}]}}"#, tags.join(","));
    let r = post_json(&gw, "/things", body.as_bytes());
    assert_eq!(r.json()["errors"].as_array().map(Vec::len), Some(10), "{r}");

    assert_eq!(up.connections(), 0, "the upstream saw a connection");
    assert_eq!(up.count(), 0);
    // and a valid request does reach it
    let r = post_json(&gw, "/things", br#"{"name":"a","email":"a@example.com"}"#);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.connections(), 1);
}

/// What must hold: a valid body is forwarded byte for byte (spacing, key order, escapes and
/// all), whether sent with a length or chunked, and the upstream gets the client's headers.
#[test]
fn valid_bodies_are_forwarded_byte_for_byte() {
    let up = Upstream::start();
    let gw = start(&up, "enforce");
    let body = "{ \"email\" : \"a@example.com\",\n  \"name\":\"\\u00e9t\u{e9}\" , \"size\": 3 }";
    let r = post_json(&gw, "/things", body.as_bytes());
    assert_eq!(r.status, 200, "{r}");
    let seen = up.last();
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.one("content-type"), Some("application/json"));
    let mut conn = Conn::open(gw.addr).unwrap();
    let auth = bearer(&token("acme"));
    let (a, b) = body.split_at(10);
    let chunked = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
    let r = conn
        .request(
            "POST",
            "/things",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json; charset=utf-8"),
                ("Transfer-Encoding", "chunked"),
            ],
            Some(chunked.as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().body, body.as_bytes());
}

/// What must hold: `validate = "report"` forwards a request its operation would refuse,
/// logs it and counts it by route and location; `"off"` checks nothing; the metric counts
/// once per request and failing location in `enforce` too.
#[test]
fn report_mode_forwards_and_counts_and_off_checks_nothing() {
    let up = Upstream::start();
    let report = start(&up, "report");
    let off = start(&up, "off");
    let enforce = start(&up, "enforce");
    let tok = token("acme");
    // counted once the response is out: wait for the request's own counter first
    let failures = |gw: &Gateway, location: &str| {
        gw.wait_metric("authgate_requests_total", &[("route", "listThings")], 1.0);
        gw.metrics().sum(
            "authgate_validation_failures_total",
            &[("route", "listThings"), ("location", location)],
        )
    };
    // query and header both fail in one request
    let r = report.get_auth("/things?limit=0", &tok, &[]);
    assert_eq!((r.status, r.proxied()), (200, true), "report forwards: {r}");
    assert_eq!((failures(&report, "query"), failures(&report, "header")), (1.0, 1.0));
    wait_for(DEADLINE, "the report line in the log", || {
        report.log_text().contains("request would be refused").then_some(())
    });
    let r = post_json(&report, "/things", br#"{"name":1}"#);
    assert_eq!((r.status, r.proxied()), (200, true), "report forwards a bad body: {r}");
    let body_failures = report.wait_metric(
        "authgate_validation_failures_total",
        &[("route", "createThing"), ("location", "body")],
        1.0,
    );
    assert_eq!(body_failures, 1.0);

    let r = off.get_auth("/things?limit=0", &tok, &[]);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
    assert_eq!(failures(&off, "query"), 0.0);

    let r = enforce.get_auth("/things?limit=0", &tok, &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!((failures(&enforce, "query"), failures(&enforce, "header")), (1.0, 1.0));
    assert_eq!(failures(&enforce, "body"), 0.0, "declared at 0");
    let denied = enforce.wait_metric(
        "authgate_denied_total",
        &[("route", "listThings"), ("reason", "invalid_request")],
        1.0,
    );
    assert_eq!(denied, 1.0);
}

/// What must hold: on a route with `error_format = "simple"` a step-7a refusal keeps the
/// simple shape, `{"error": "<message>"}`.
#[test]
fn a_simple_error_format_keeps_its_shape() {
    let up = Upstream::start();
    let gw = start(&up, "enforce");
    let r = gw.get_auth("/simple?n=x", &token("acme"), &[]);
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(
        r.json(),
        json!({"error": "Invalid query parameter n: must be an integer"})
    );
}

/// Fault: specs an operator gets wrong (no operationId, two operations for the same request,
/// a remote `$ref`, an overlay for an operation that does not exist). What must hold:
/// `authgate check` names each at its file and line and exits 1; a good config prints `ok`,
/// and `authgate routes` prints the compiled table.
#[test]
fn check_reports_spec_problems_at_their_line_and_routes_prints_the_table() {
    let dir = TempDir::new("openapi-check");
    for (rel, bytes) in standard_files() {
        dir.write(&rel, &bytes);
    }
    dir.write("partners.toml", base_policy().as_bytes());
    let bad = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      summary: no id\n  /b/{x}:\n    get:\n      operationId: one\n  /b/{y}:\n    get:\n      operationId: two\n  /c:\n    post:\n      operationId: three\n      requestBody:\n        content:\n          application/json:\n            schema: {$ref: 'https://example.com/s.json'}\n";
    dir.write("api.yaml", bad.as_bytes());
    let mut cfg = config("enforce").replace("{upstream}", "127.0.0.1:1");
    cfg = cfg.replace("{listen}", "127.0.0.1:0").replace("{admin}", "127.0.0.1:0");
    cfg = cfg.replace("id = \"ping\"", "id = \"nope\"");
    let path = dir.write("authgate.toml", cfg.as_bytes());
    let path = path.to_str().unwrap();
    let cli = |command: &str| run_cli(&dir.path, &[command, "--config", path], None, DEADLINE);
    let out = cli("check");
    assert_eq!(out.code(), Some(1), "{}", out.all());
    for needle in [
        "api.yaml:5:",
        "operationId",
        "api.yaml:11:",
        "\"one\"",
        "\"two\"",
        "api.yaml:19:",
        "remote",
    ] {
        assert!(out.stdout.contains(needle), "{needle} missing:\n{}", out.all());
    }

    dir.write("api.yaml", SPEC.as_bytes());
    let out = cli("check");
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.stdout.contains("\"nope\" is not an operationId"), "{}", out.all());
    dir.write(
        "authgate.toml",
        cfg.replace("id = \"nope\"", "id = \"ping\"").as_bytes(),
    );
    let out = cli("check");
    assert_eq!((out.code(), out.stdout.trim()), (Some(0), "ok"), "{}", out.all());
    let out = cli("routes");
    assert_eq!(out.code(), Some(0), "{}", out.all());
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("createLink "))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    for needle in [
        "POST",
        "/things/{orgId}/links",
        "partner,tiny",
        "orgId",
        "enforce",
        "body application/json",
    ] {
        assert!(line.contains(needle), "{needle} missing in {line:?}");
    }
}
