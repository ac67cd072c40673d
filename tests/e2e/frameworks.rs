//! End-to-end differentials against real upstream frameworks (docs/reference.md#reading-requests):
//! Express 4 and FastAPI behind the gateway, each reporting what its handlers actually ran.
//! Each test first shows the framework reading the hostile request its own way (sent to it
//! directly: the bypass is real), then that through the gateway nothing schema-breaking
//! reaches it.

use serde_json::{json, Value};

use crate::common::frameworks::Framework;
use crate::common::tls::{self, Site};
use crate::common::*;

/// The operations of the Express app (tests/frameworks/express/server.js), as its spec.
const EXPRESS_SPEC: &str = r#"openapi: 3.1.0
info: {title: things, version: "1"}
paths:
  /v2/orgs/{orgId}/login-links:
    post:
      operationId: createLoginLink
      parameters:
        - {name: orgId, in: path, required: true, schema: {type: string}}
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              required: [email]
              properties:
                email: {type: string, format: email}
  /things/register:
    get: {operationId: register}
  /things/{id}:
    get:
      operationId: getThing
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
  /things:
    get:
      operationId: listThings
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
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
  /things/{id}/archive:
    post:
      operationId: archiveThing
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
  /forms:
    post:
      operationId: submitForm
      requestBody:
        required: true
        content:
          application/x-www-form-urlencoded:
            schema:
              type: object
              additionalProperties: false
              required: [name]
              properties:
                name: {type: string, maxLength: 5}
                count: {type: integer, maximum: 10}
"#;

/// A gateway (`[server.tls]` when `site` is given) in front of `upstream`, compiling `spec`
/// with every operation unauthenticated: these tests are about what is read, not who asks.
fn gateway_for(upstream: &str, spec: &str, site: Option<&Site>) -> Gateway {
    let mut config = base_config();
    if site.is_some() {
        config = tls::with_tls(&config);
    }
    config.push_str("\n[[openapi]]\nspec = \"api.json\"\nvalidate = \"enforce\"\ndefaults = { auth = \"none\" }\n");
    let mut files: Vec<(&str, &[u8])> = vec![("api.json", spec.as_bytes())];
    if let Some(s) = site {
        files.extend(s.files());
    }
    Gateway::start(upstream, &config, &base_policy(), &files)
}

/// The operations the framework ran, in order.
fn operations(app: &Framework) -> Vec<String> {
    app.seen()
        .iter()
        .map(|e| e["operation"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Fault model: `/things/regist%65r` was checked by the gateway as `register` and run by
/// Express as `/things/:id` (Express routes on the raw path, FastAPI decodes it first):
/// whichever way the gateway reads it, one of the two frameworks runs another operation.
/// Must hold: both frameworks disagree when asked directly, and through the gateway the
/// path is 400 `bad_path` and reaches neither.
#[test]
fn an_encoded_unreserved_path_is_refused_where_express_and_fastapi_disagree() {
    let express = Framework::express();
    let fastapi = Framework::fastapi();
    let path = "/things/regist%65r";
    assert_eq!(get(express.addr, path, &[]).json()["operation"], "getThing");
    assert_eq!(get(fastapi.addr, path, &[]).json()["operation"], "register");
    for app in [&express, &fastapi] {
        let before = app.seen().len();
        let gw = gateway_for(&app.address(), EXPRESS_SPEC, None);
        let r = gw.get(path, &[]);
        assert_error(&r, 400, path);
        assert_eq!(app.seen().len(), before, "the framework ran it anyway");
    }
}

/// Fault model: over HTTP/2 a body without `content-length` was not validated (Express got
/// `{"role":"admin"}` on an operation that takes no body), and a held one was forwarded with
/// two last-chunks, which Node answers with a bare 400. Must hold: Express never runs the
/// body-less operation with a body, and runs a valid held body once, whole, framed by one
/// `Content-Length`.
#[test]
fn express_gets_h2_bodies_only_as_the_spec_allows_and_framed_once() {
    let express = Framework::express();
    let site = Site::new();
    let gw = gateway_for(&express.address(), EXPRESS_SPEC, Some(&site));
    let client = site.client(b"h2");
    let json = [("content-type", "application/json")];
    let r = tls::h2_request(
        gw.addr,
        client.clone(),
        "POST",
        "/things/t1/archive",
        &json,
        Some(br#"{"role":"admin"}"#),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    let body = br#"{"name":"widget"}"#;
    let r = tls::h2_request(gw.addr, client.clone(), "POST", "/things", &json, Some(body)).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let seen = express.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["operation"], "createThing");
    assert_eq!(seen[0]["body"], json!({"name": "widget"}));
    assert_eq!(seen[0]["contentLength"], body.len().to_string());
    assert_eq!(seen[0]["transferEncoding"], Value::Null);
}

/// Fault model: a client sending `Expect: 100-continue` to a held-body operation waited for
/// a `100` (curl: 1 s) because the gateway reads the body before it contacts Express. Must
/// hold: the gateway answers `100 Continue`, Express runs the body once, and is not asked to
/// continue again.
#[test]
fn expect_continue_reaches_express_as_a_plain_body() {
    use std::io::{Read, Write};
    let express = Framework::express();
    let gw = gateway_for(&express.address(), EXPRESS_SPEC, None);
    let body = br#"{"name":"widget"}"#;
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        s,
        "POST /things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body).unwrap();
    let r = read_one_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["body"], json!({"name": "widget"}));
    assert_eq!(operations(&express), vec!["createThing"]);
}
