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

/// Fault model: `Content-Type: application/json; charset=utf-7` with
/// `{"email":"x+ACIALAAi-email+ACIAOgAi-bogus"}` passed the login-links schema (one string
/// property) while Express's body-parser decoded UTF-7 and ran `{"email":"bogus"}`. Must
/// hold: Express reads it that way when asked directly, and through the gateway it is 415
/// and never reaches Express.
#[test]
fn a_utf7_body_express_would_decode_differently_is_415() {
    let express = Framework::express();
    let body = br#"{"email":"x+ACIALAAi-email+ACIAOgAi-bogus"}"#;
    let utf7 = [("Content-Type", "application/json; charset=utf-7")];
    let path = "/v2/orgs/o1/login-links";
    let direct = request(express.addr, "POST", path, &utf7, Some(body));
    assert_eq!(
        direct.json()["body"],
        json!({"email": "bogus"}),
        "Express no longer decodes UTF-7: {direct}"
    );
    let gw = gateway_for(&express.address(), EXPRESS_SPEC, None);
    let r = gw.req("POST", path, &utf7, Some(body));
    assert_eq!(r.status, 415, "{r}");
    let r = gw.req(
        "POST",
        path,
        &[("Content-Type", "application/json; charset=\"UTF-8\"")],
        Some(br#"{"email":"a@b.co"}"#),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(operations(&express), vec!["createLoginLink", "createLoginLink"]);
}

/// Fault model: `?limit[]=500` passed `maximum: 100` (the gateway saw no `limit`) while qs
/// handed Express `limit = ['500']`; `limit=1000e-1` passed as 100 while `parseInt` reads
/// 1000. Must hold: through the gateway both are 400 and Express runs neither; a plain valid
/// limit passes.
#[test]
fn query_spellings_qs_reads_as_the_parameter_are_checked_as_it() {
    let express = Framework::express();
    assert_eq!(
        get(express.addr, "/things?limit[]=500", &[]).json()["query"]["limit"],
        json!(["500"])
    );
    let before = express.seen().len();
    let gw = gateway_for(&express.address(), EXPRESS_SPEC, None);
    for target in [
        "/things?limit[]=500",
        "/things?limit%5B%5D=500",
        "/things?limit[0]=5",
        "/things?limit=1000e-1",
        "/things?limit=+5",
        "/things?limit=5&limit[]=6",
    ] {
        let r = gw.get(target, &[]);
        assert_eq!(r.status, 400, "{target}: {r}");
    }
    assert_eq!(express.seen().len(), before, "a refused query reached Express");
    let r = gw.get("/things?limit=50", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["query"]["limit"], "50");
}

/// Fault model: a form-urlencoded body on an operation that declares a form schema streamed
/// through unchecked, and Express's qs parser builds arrays and objects from bracketed names.
/// Must hold: a form body that breaks the schema (a count over its maximum, a bracketed
/// name, a repeated scalar) is 400 and never reaches Express; a valid one reaches it as sent.
#[test]
fn form_bodies_are_checked_as_express_parses_them() {
    let express = Framework::express();
    let gw = gateway_for(&express.address(), EXPRESS_SPEC, None);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for bad in [
        "name=abc&count=20",
        "name=abcdefgh",
        "name[]=abc",
        "name=a&name=b",
        "count=1",
        "name=a&role=admin",
    ] {
        let r = gw.req("POST", "/forms", &form, Some(bad.as_bytes()));
        assert_eq!(r.status, 400, "{bad}: {r}");
    }
    assert!(express.seen().is_empty(), "{:?}", express.seen());
    let r = gw.req("POST", "/forms", &form, Some(b"name=abc&count=7"));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["body"], json!({"name": "abc", "count": "7"}));
}

/// Fault model: a JSON body with a UTF-8 byte order mark, or a lone surrogate escape, was
/// refused by the gateway (serde_json rejects both) while Express (body-parser) accepts them:
/// the edge refused requests the upstream would run. Must hold: both pass the gateway,
/// checked as the upstream reads them, and reach Express byte for byte.
#[test]
fn bom_and_lone_surrogates_are_read_as_express_reads_them() {
    let express = Framework::express();
    let gw = gateway_for(&express.address(), EXPRESS_SPEC, None);
    let json_ct = [("Content-Type", "application/json")];
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(br#"{"name":"bom"}"#);
    let r = gw.req("POST", "/things", &json_ct, Some(&bom));
    assert_eq!(r.status, 200, "{r}");
    let r = gw.req("POST", "/things", &json_ct, Some(br#"{"name":"\ud800"}"#));
    assert_eq!(r.status, 200, "{r}");
    // still checked: a lone surrogate in a name that is too long is refused
    let long = format!(r#"{{"name":"{}\ud800"}}"#, "x".repeat(20));
    let r = gw.req("POST", "/things", &json_ct, Some(long.as_bytes()));
    assert_eq!(r.status, 400, "{r}");
    // (Express's record holds the lone surrogate as an escape serde_json refuses: read as text)
    let seen = get(express.addr, "/__seen", &[]).text();
    assert_eq!(seen.matches(r#""operation":"createThing""#).count(), 2, "{seen}");
    assert!(seen.contains(r#""body":{"name":"\ud800"}"#), "{seen}");
}

/// Fault model: FastAPI's own generated spec was unusable: it writes
/// `anyOf: [{type: integer, ...}, {type: "null"}]` for every optional typed parameter, and the
/// gateway, finding no `type`, refused every value. Must hold: the gateway compiles the spec
/// FastAPI serves, accepts what FastAPI accepts (an optional limit in range, absent, repeated
/// list items) and refuses what breaks the schema before FastAPI sees it.
#[test]
fn fastapis_own_spec_compiles_and_checks_what_fastapi_checks() {
    let fastapi = Framework::fastapi();
    let gw = gateway_for(&fastapi.address(), &fastapi.openapi(), None);
    for (target, limit) in [
        ("/things?limit=5", json!(5)),
        ("/things", Value::Null),
        ("/things?tag=a&tag=b&offset=3", Value::Null),
    ] {
        let r = gw.get(target, &[]);
        assert_eq!(r.status, 200, "{target}: {r}");
        assert_eq!(r.json()["limit"], limit, "{target}");
    }
    let before = fastapi.seen().len();
    for target in [
        "/things?limit=500",
        "/things?limit=abc",
        "/things?limit=1000e-1",
        "/things?limit[]=5",
    ] {
        let r = gw.get(target, &[]);
        assert_eq!(r.status, 400, "{target}: {r}");
    }
    let r = gw.req(
        "POST",
        "/things",
        &[("Content-Type", "application/json")],
        Some(br#"{"name":"x","size":11}"#),
    );
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(fastapi.seen().len(), before, "a refused request reached FastAPI");
}
