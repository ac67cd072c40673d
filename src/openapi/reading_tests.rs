//! Reading a request the way the upstream will (docs/reference.md, the OpenAPI section),
//! through the public API the proxy calls: the request is read the way the
//! upstream will read it (charset, BOM, surrogates, form bodies, brackets, number syntax,
//! FastAPI's types), what cannot be checked is refused at compile, and the cost bounds.

use std::path::Path;

use http::{HeaderMap, HeaderValue};
use serde_json::json;

use super::*;

const PARTNER: &str = include_str!("../../config/openapi/partner-api.yaml");
const FASTAPI: &str = include_str!("../../tests/fixtures/fastapi/openapi.json");

fn spec(text: &str) -> CompiledSpec {
    compile(Path::new("spec.yaml"), text, "").unwrap_or_else(|p| panic!("{p:#?}"))
}

fn problems(text: &str) -> Vec<String> {
    compile(Path::new("spec.yaml"), text, "")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Routes and runs both checks as the proxy does: the plan, or the rejection.
fn request(
    spec: &CompiledSpec,
    method: &str,
    target: &str,
    hdrs: &[(&str, &str)],
    body: &[u8],
) -> Result<BodyPlan, Rejection> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.as_bytes())),
        None => (target, None),
    };
    let RouteOutcome::Match { operation, captures } = spec.find(method, path.as_bytes(), false) else {
        panic!("{method} {target} does not route");
    };
    let op = &spec.operations()[operation];
    let h = headers(hdrs);
    let plan = op.check_head(&RequestHead {
        captures: &captures,
        query,
        headers: &h,
    })?;
    if let BodyPlan::Hold(held) = plan {
        op.check_body(held, body)?;
    }
    Ok(plan)
}

fn post(spec: &CompiledSpec, target: &str, content_type: &str, body: &[u8]) -> Result<BodyPlan, Rejection> {
    let len = body.len().to_string();
    request(
        spec,
        "POST",
        target,
        &[("content-type", content_type), ("content-length", &len)],
        body,
    )
}

fn get(spec: &CompiledSpec, target: &str) -> Result<BodyPlan, Rejection> {
    request(spec, "GET", target, &[], b"")
}

fn message(r: Result<BodyPlan, Rejection>) -> String {
    r.unwrap_err().message
}

#[test]
fn a_charset_other_than_utf_8_is_415() {
    let p = spec(PARTNER);
    let link = "/partner/v1/orgs/o-1/login-links";
    // the audit's body: UTF-7 turns it into {"email":"bogus"} upstream
    let utf7 = br#"{"email":"x+ACIALAAi-email+ACIAOgAi-bogus@example.com"}"#;
    let r = post(&p, link, "application/json; charset=utf-7", utf7).unwrap_err();
    assert_eq!((r.status, r.reason.as_str()), (415, "unsupported_media_type"));
    assert_eq!(
        r.message,
        "Unsupported media type: Content-Type application/json; charset=utf-7: charset \"utf-7\" is not supported: send the body as UTF-8 (charset=utf-8, or none)"
    );
    for ok in [
        "application/json; charset=UTF-8",
        "application/json;charset=\"utf-8\"",
        "application/json; v=2",
    ] {
        assert!(post(&p, link, ok, br#"{"email":"a@b.co"}"#).is_ok(), "{ok}");
    }
}

#[test]
fn json_is_read_as_node_and_python_read_it() {
    let p = spec(PARTNER);
    let orgs = "/partner/v1/orgs";
    // a byte order mark is skipped for validation
    assert!(post(&p, orgs, "application/json", b"\xEF\xBB\xBF{\"name\":\"Acme\"}").is_ok());
    assert_eq!(
        message(post(&p, orgs, "application/json", b"\xEF\xBB\xBF{}")),
        "Invalid request body: /name is required"
    );
    // a lone surrogate is U+FFFD: validated, not refused as unparseable
    assert!(post(&p, orgs, "application/json", br#"{"name":"\ud800"}"#).is_ok());
    assert!(post(&p, orgs, "application/json", br#"{"name":"\udc00\ud800x"}"#).is_ok());
    assert_eq!(
        message(post(&p, orgs, "application/json", br#"{"name":"\ud800","language":1}"#)),
        "Invalid request body: /language must be a string"
    );
}

#[test]
fn the_audits_query_parameters_are_refused() {
    let p = spec(PARTNER);
    for target in [
        "/partner/v1/orgs?limit[]=500",
        "/partner/v1/orgs?limit%5B%5D=500",
        "/partner/v1/orgs?limit[0]=5",
        "/partner/v1/orgs?limit=5&limit=6",
        "/partner/v1/orgs?limit=1000e-1",
        "/partner/v1/orgs?limit=+5",
        "/partner/v1/orgs?limit=0x10",
    ] {
        let r = get(&p, target).unwrap_err();
        assert_eq!((r.status, r.errors[0].pointer.as_str()), (400, "limit"), "{target}");
    }
    assert!(get(&p, "/partner/v1/orgs?limit=100&offset=007").is_ok());
}

const FORM: &str = "openapi: 3.1.0
paths:
  /signup:
    post:
      operationId: signup
      requestBody:
        required: true
        content:
          application/x-www-form-urlencoded:
            schema:
              type: object
              required: [email]
              additionalProperties: false
              properties:
                email: {type: string, format: email}
                age: {type: integer, maximum: 150}
                tags: {type: array, items: {type: string}, maxItems: 2}
";

#[test]
fn form_bodies_are_held_and_checked() {
    let s = spec(FORM);
    let form = "application/x-www-form-urlencoded";
    assert!(matches!(
        post(&s, "/signup", form, b"email=a%40b.co&age=30&tags=x&tags[]=y"),
        Ok(BodyPlan::Hold(_))
    ));
    let refused = |body: &str| {
        let r = post(&s, "/signup", form, body.as_bytes()).unwrap_err();
        (r.message, r.errors.len())
    };
    assert_eq!(
        refused("email=a%40b.co&age=151").0,
        "Invalid request body: /age must be at most 150"
    );
    assert_eq!(
        refused("email=a%40b.co&age=1000e-1").0,
        "Invalid request body: /age must be an integer"
    );
    assert_eq!(
        refused("email=a%40b.co&age[]=1").0,
        "Invalid request body: /age must be given once, without brackets (a name with [] is read as a list)"
    );
    assert_eq!(
        refused("email=a%40b.co&email=c%40d.co").0,
        "Invalid request body: /email must be given once"
    );
    assert_eq!(
        refused("email=a%40b.co&admin=true").0,
        "Invalid request body: /admin is not allowed"
    );
    assert_eq!(refused("age=1").0, "Invalid request body: /email is required");
    assert_eq!(
        message(post(&s, "/signup", "application/x-www-form-urlencoded; charset=iso-8859-1", b"email=a%E9")),
        "Unsupported media type: Content-Type application/x-www-form-urlencoded; charset=iso-8859-1: charset \"iso-8859-1\" is not supported: send the body as UTF-8 (charset=utf-8, or none)"
    );
    let summary = s.operations()[0].summary();
    assert_eq!(summary, "body application/x-www-form-urlencoded (schema) required");
}

#[test]
fn media_types_the_gateway_cannot_check_are_refused_at_compile() {
    let with = |media: &str, schema: &str, x: &str| {
        format!(
            "openapi: 3.1.0\npaths:\n  /up:\n    post:\n      operationId: up\n{x}      requestBody:\n        content:\n          {media}:\n            schema: {schema}\n"
        )
    };
    let object = "{type: object, properties: {file: {type: string}}}";
    for media in ["multipart/form-data", "'application/*'", "'*/*'", "text/plain"] {
        let got = problems(&with(media, object, ""));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("spec.yaml:9: "), "{}", got[0]);
        assert!(got[0].contains("has a schema the gateway cannot check"), "{}", got[0]);
        assert!(got[0].contains("validate = \"off\""), "{}", got[0]);
        // the operation's x-authgate turns its validation off: routed, not checked
        let off = spec(&with(media, object, "      x-authgate: {validate: 'off'}\n"));
        assert!(off.operations()[0].validation_off());
        assert_eq!(off.operations()[0].summary(), "off");
    }
    // how file uploads are described constrains nothing about bytes
    let upload = spec(&with("application/octet-stream", "{type: string, format: binary}", ""));
    assert!(matches!(
        post(&upload, "/up", "application/octet-stream", b"\x00\x01"),
        Ok(BodyPlan::Stream)
    ));
    // the config can turn it off too (the table, defaults or an overlay)
    let options = CompileOptions {
        overlays: vec![(
            "up".into(),
            Switches {
                validate_off: Some(true),
                ..Switches::default()
            },
        )],
        ..CompileOptions::default()
    };
    assert!(compile_with(Path::new("s.yaml"), &with("multipart/form-data", object, ""), &options).is_ok());
}

const LOOKAROUND: &str = "openapi: 3.1.0
paths:
  /p:
    post:
      operationId: p
      x-authgate: {allow_backtracking_patterns: true}
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                code: {type: string, pattern: '^(?=.*[0-9])[a-z0-9]+$'}
                slow: {type: array, items: {type: string, pattern: '^(?=a)(a|a)*\\1?b$'}}
";

#[test]
fn backtracking_patterns_need_the_opt_in_and_run_on_a_budget() {
    let without = LOOKAROUND.replace("      x-authgate: {allow_backtracking_patterns: true}\n", "");
    let got = problems(&without);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("spec.yaml:9: pattern "), "{}", got[0]);
    assert!(got[0].contains("allow_backtracking_patterns = true"), "{}", got[0]);

    let s = spec(LOOKAROUND);
    let json = "application/json";
    assert!(post(&s, "/p", json, br#"{"code":"ab1"}"#).is_ok());
    assert_eq!(
        message(post(&s, "/p", json, br#"{"code":"abc"}"#)),
        "Invalid request body: /code must match the pattern ^(?=.*[0-9])[a-z0-9]+$"
    );
    // catastrophic backtracking spends the budget: refused, never let through
    let slow = format!(
        r#"{{"slow":[{}]}}"#,
        vec![format!("\"{}\"", "a".repeat(40)); 20].join(",")
    );
    let r = post(&s, "/p", json, slow.as_bytes()).unwrap_err();
    assert_eq!((r.status, r.message.as_str()), (400, "Invalid request body: could not be checked: its pattern needs more backtracking than one request may spend"));
}

#[test]
fn numeric_keywords_without_a_type_are_refused_at_compile() {
    let text = "openapi: 3.1.0
paths:
  /a:
    get:
      operationId: a
      parameters:
        - name: limit
          in: query
          schema: {maximum: 100}
";
    let got = problems(text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("spec.yaml:9: parameter \"limit\": maximum with no integer or number type"),
        "{}",
        got[0]
    );
}

fn fastapi() -> CompiledSpec {
    compile(Path::new("openapi.json"), FASTAPI, "").unwrap_or_else(|p| panic!("{p:#?}"))
}

#[test]
fn fastapis_own_spec_compiles_and_checks_what_fastapi_would() {
    let s = fastapi();
    for ok in [
        "/items",
        "/items?limit=5",
        "/items?limit=100&offset=0&min_price=0.5",
        "/items?tag=1&tag=2",
        "/items?tag[]=1",
    ] {
        assert!(get(&s, ok).is_ok(), "{ok}: {:?}", get(&s, ok));
    }
    for (bad, pointer) in [
        ("/items?limit=500", "limit"),
        ("/items?limit=abc", "limit"),
        ("/items?limit=1000e-1", "limit"),
        ("/items?limit[]=5", "limit"),
        ("/items?offset=-1", "offset"),
        ("/items?min_price=0", "min_price"),
        ("/items?tag=x", "tag"),
        ("/items/0", "item_id"),
    ] {
        let r = get(&s, bad).unwrap_err();
        assert_eq!((r.status, r.errors[0].pointer.as_str()), (400, pointer), "{bad}");
    }
    assert!(get(&s, "/items/7").is_ok());
    let trace = request(&s, "GET", "/items", &[("x-trace", &"t".repeat(17))], b"").unwrap_err();
    assert_eq!(trace.errors[0].pointer, "x-trace");
}

#[test]
fn fastapis_bodies_json_form_and_an_upload_it_does_not_check() {
    let s = fastapi();
    let json = "application/json";
    assert!(post(&s, "/items", json, br#"{"name":"pen","price":1.5,"quantity":null}"#).is_ok());
    assert_eq!(
        message(post(&s, "/items", json, br#"{"name":"pen","price":0}"#)),
        "Invalid request body: /price must be greater than 0.0"
    );
    let form = "application/x-www-form-urlencoded";
    assert!(post(&s, "/login", form, b"username=ann&remember=true&attempts=3").is_ok());
    assert_eq!(
        message(post(&s, "/login", form, b"username=ann&attempts=6")),
        "Invalid request body: /attempts must match one of the allowed schemas"
    );
    assert_eq!(
        message(post(&s, "/login", form, b"username=ann&remember=yes")),
        "Invalid request body: /remember must be a boolean"
    );
    assert_eq!(
        message(post(&s, "/login", form, b"remember=true")),
        "Invalid request body: /username is required"
    );
    let upload = post(&s, "/uploads", "multipart/form-data; boundary=x", b"--x--");
    assert!(matches!(upload, Ok(BodyPlan::Stream)), "{upload:?}");
}

#[test]
fn a_large_spec_shares_its_components_and_still_checks_deep_inside() {
    let mut schemas = serde_json::Map::new();
    for i in 0..30 {
        schemas.insert(
            format!("S{i}"),
            json!({"type": "object", "additionalProperties": false, "properties": {
                "n": {"type": "integer", "maximum": 9},
                "next": {"$ref": format!("#/components/schemas/S{}", (i + 1) % 30)}
            }}),
        );
    }
    let mut paths = serde_json::Map::new();
    for i in 0..20 {
        paths.insert(
            format!("/s{i}"),
            json!({"post": {"operationId": format!("s{i}"), "requestBody": {
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/S{i}")}}}}}}),
        );
    }
    let text = json!({"openapi": "3.1.0", "paths": paths, "components": {"schemas": schemas}}).to_string();
    let s = spec(&text);
    assert!(post(&s, "/s3", "application/json", br#"{"n":1,"next":{"n":2,"next":{}}}"#).is_ok());
    let r = post(&s, "/s3", "application/json", br#"{"next":{"next":{"n":10,"x":1}}}"#).unwrap_err();
    let got: Vec<(String, String)> = r.errors.into_iter().map(|e| (e.pointer, e.message)).collect();
    assert_eq!(
        got,
        vec![
            ("/next/next/n".to_string(), "must be at most 9".to_string()),
            ("/next/next/x".to_string(), "is not allowed".to_string()),
        ]
    );
}
