//! End-to-end: step 7a reads the request the way the upstream will (docs/reference.md, the
//! OpenAPI section): the charset of a body, form bodies, bracket and
//! number spellings of parameters, FastAPI's own spec, JSON as Node reads it, what `check`
//! refuses because the gateway could not enforce it, and the bounds on what one request's
//! validation costs. Against the real binary and an upstream that records what it received.

use crate::common::*;
use serde_json::json;

/// Operations the audit found read differently at the edge and upstream.
const SPEC: &str = r#"openapi: 3.1.0
info: {title: reading, version: "1"}
paths:
  /links:
    post:
      operationId: createLink
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [email]
              additionalProperties: false
              properties:
                email: {type: string, format: email}
                note: {type: string, maxLength: 20}
                lang: {type: string, enum: [LANGS]}
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
                age: {type: integer, minimum: 0, maximum: 150}
                tags: {type: array, items: {type: string}, maxItems: 3}
  /orgs:
    get:
      operationId: listOrgs
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
  /codes:
    post:
      operationId: postCode
      x-authgate: {allow_backtracking_patterns: true}
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                codes: {type: array, items: {type: string, pattern: '^(?=a)(a|a)*\1?b$'}}
"#;

/// A thousand enum values: a refusal names the first five and how many more.
fn spec() -> String {
    let langs: Vec<String> = (0..1000).map(|i| format!("l{i}")).collect();
    SPEC.replace("LANGS", &langs.join(", "))
}

fn config() -> String {
    let mut text = base_config();
    text.push_str("\n[[openapi]]\nspec = \"api.yaml\"\ndefaults = { auth = \"partner\", limits = [\"partner\"] }\n");
    text
}

fn start(up: &Upstream) -> Gateway {
    let spec = spec();
    Gateway::start(
        &up.address(),
        &config(),
        &base_policy(),
        &[("api.yaml", spec.as_bytes())],
    )
}

fn post(gw: &Gateway, path: &str, content_type: &str, body: &[u8]) -> Response {
    let auth = bearer(&token("acme"));
    gw.req(
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", content_type)],
        Some(body),
    )
}

/// Answered at the edge with `status`, the DTO's `message`, and `errors[0].in`/`pointer`.
fn assert_refused(r: &Response, status: u16, message: &str, at: (&str, &str)) {
    assert_eq!(r.status, status, "{r}");
    assert!(!r.proxied(), "answered by the upstream: {r}");
    let v = r.json();
    assert_eq!(v["message"], message, "{r}");
    assert_eq!(
        (v["errors"][0]["in"].as_str(), v["errors"][0]["pointer"].as_str()),
        (Some(at.0), Some(at.1)),
        "{r}"
    );
}

/// Fault model: a client sends the audit's body, `{"email":"x+ACIALAAi-email+ACIAOgAi-...`
/// with `Content-Type: application/json; charset=utf-7`: valid JSON with one `email` to the
/// gateway, but Express's body-parser and Django decode UTF-7 and run `{"email":"bogus"}`.
/// Must hold: 415 `unsupported_media_type` naming the charset, nothing reaches the upstream
/// (no connection); `charset=UTF-8` (quoted or not) and other parameters pass. Fails on the
/// code before this change, which ignored media-type parameters and forwarded it.
#[test]
fn a_utf7_body_is_415_and_never_reaches_the_upstream() {
    let up = Upstream::start();
    let gw = start(&up);
    let utf7 = br#"{"email":"x+ACIALAAi-email+ACIAOgAi-bogus@example.com"}"#;
    let r = post(&gw, "/links", "application/json; charset=utf-7", utf7);
    assert_refused(
        &r,
        415,
        "Unsupported media type: Content-Type application/json; charset=utf-7: charset \"utf-7\" is not supported: send the body as UTF-8 (charset=utf-8, or none)",
        ("header", "Content-Type"),
    );
    assert_eq!(r.json()["error"], "Unsupported Media Type");
    assert_eq!((up.connections(), up.count()), (0, 0));
    for ok in [
        "application/json; charset=\"UTF-8\"",
        "application/json;charset=utf-8;v=2",
    ] {
        let r = post(&gw, "/links", ok, br#"{"email":"a@example.com"}"#);
        assert_eq!((r.status, r.proxied()), (200, true), "{ok}: {r}");
    }
}

/// Fault model: an `application/x-www-form-urlencoded` body on an operation that declares a
/// form schema: out of range, a scalar given as `age[]` (qs makes it a list), an undeclared
/// field, a missing required field, a `charset=iso-8859-1`. Must hold: each is refused at the
/// edge (400, 415 for the charset) with the field's pointer and the recording upstream
/// receives nothing; a valid form is forwarded byte for byte. Fails on the gateway before this change,
/// where a form body streamed through unchecked.
#[test]
fn form_bodies_are_checked_and_a_refused_one_reaches_nothing() {
    let up = Upstream::start();
    let gw = start(&up);
    let form = "application/x-www-form-urlencoded";
    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"email=a%40example.com&age=151",
            "Invalid request body: /age must be at most 150",
            "/age",
        ),
        (
            b"email=a%40example.com&age[]=1",
            "Invalid request body: /age must be given once, without brackets (a name with [] is read as a list)",
            "/age",
        ),
        (
            b"email=a%40example.com&admin=true",
            "Invalid request body: /admin is not allowed",
            "/admin",
        ),
        (b"age=30", "Invalid request body: /email is required", "/email"),
    ];
    for (body, message, pointer) in cases {
        assert_refused(&post(&gw, "/signup", form, body), 400, message, ("body", pointer));
    }
    let r = post(
        &gw,
        "/signup",
        "application/x-www-form-urlencoded; charset=iso-8859-1",
        b"email=a%E9",
    );
    assert_eq!(r.status, 415, "{r}");
    assert_eq!(
        (up.connections(), up.count()),
        (0, 0),
        "a refused form reached the upstream"
    );
    let body = b"email=a%40example.com&age=30&tags=x&tags[]=y";
    let r = post(&gw, "/signup", form, body);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
    assert_eq!(up.last().body, body);
}

/// Fault model: a scalar query parameter written the ways other readers read differently:
/// `limit[]=500` (qs: `['500']`, past `maximum: 100`), percent-encoded `limit%5B%5D=500`,
/// `limit=1000e-1` (JSON's 100, `parseInt`'s 1000), `limit=+5`, and twice. Must hold: each
/// is 400 `invalid_request` naming `limit`, and nothing reaches the upstream; `limit=050`
/// passes. Fails on the gateway before this change, which let `limit[]=500` and `limit=1000e-1` through.
#[test]
fn bracket_and_number_spellings_of_a_scalar_are_refused() {
    let up = Upstream::start();
    let gw = start(&up);
    let tok = token("acme");
    for query in [
        "limit[]=500",
        "limit%5B%5D=500",
        "limit[0]=5",
        "limit=1000e-1",
        "limit=%2B5",
        "limit=5&limit=6",
    ] {
        let r = gw.get_auth(format!("/orgs?{query}"), &tok, &[]);
        assert_eq!((r.status, r.proxied()), (400, false), "{query}: {r}");
        assert_eq!(r.json()["errors"][0]["pointer"], "limit", "{query}: {r}");
    }
    assert_eq!((up.connections(), up.count()), (0, 0));
    let r = gw.get_auth("/orgs?limit=050", &tok, &[]);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
}

/// Fault model: the spec FastAPI itself generates (tests/fixtures/fastapi/openapi.json),
/// where every optional typed parameter is `anyOf: [{type: integer}, {type: "null"}]` and a
/// file upload is `multipart/form-data` (its operation sets `x-authgate: {validate: off}`).
/// Must hold: the spec passes `check`; optional parameters are accepted when valid and
/// checked when not (`limit=5` passes, `limit=500`, `limit=abc`, `min_price=0` are 400); its
/// form body is checked; the upload streams. Fails on the gateway before this change, which refused
/// every value of such a parameter (`must match one of the allowed schemas` for `limit=5`).
#[test]
fn fastapi_optional_parameters_are_accepted_and_checked() {
    let up = Upstream::start();
    let mut text = base_config();
    text.push_str(
        "\n[[openapi]]\nspec = \"openapi.json\"\ndefaults = { auth = \"partner\", limits = [\"partner\"] }\n",
    );
    let fastapi = read_repo("tests/fixtures/fastapi/openapi.json");
    let gw = Gateway::start(
        &up.address(),
        &text,
        &base_policy(),
        &[("openapi.json", fastapi.as_bytes())],
    );
    let tok = token("acme");
    for ok in [
        "/items?limit=5",
        "/items",
        "/items?tag=1&tag[]=2&min_price=0.5",
        "/items/3",
    ] {
        let r = gw.get_auth(ok, &tok, &[]);
        assert_eq!((r.status, r.proxied()), (200, true), "{ok}: {r}");
    }
    for (bad, pointer) in [
        ("/items?limit=500", "limit"),
        ("/items?limit=abc", "limit"),
        ("/items?min_price=0", "min_price"),
        ("/items/0", "item_id"),
    ] {
        let r = gw.get_auth(bad, &tok, &[]);
        assert_eq!(
            (r.status, r.json()["errors"][0]["pointer"].clone()),
            (400, json!(pointer)),
            "{bad}: {r}"
        );
    }
    let r = post(
        &gw,
        "/login",
        "application/x-www-form-urlencoded",
        b"username=&remember=true",
    );
    assert_refused(
        &r,
        400,
        "Invalid request body: /username must be at least 1 characters long",
        ("body", "/username"),
    );
    let r = post(
        &gw,
        "/uploads",
        "multipart/form-data; boundary=b",
        b"--b\r\n\r\n--b--\r\n",
    );
    assert_eq!(
        (r.status, r.proxied()),
        (200, true),
        "the upload streams unchecked: {r}"
    );
    assert_eq!(up.count(), 5);
}

/// Fault model: JSON as Node and Python read it: a body with a UTF-8 byte order mark, and
/// strings with lone surrogate escapes (`"\ud800"`, a high surrogate before a non-low one)
/// that serde_json refuses. Must hold: both are validated (a lone surrogate as U+FFFD: a
/// valid body passes, an invalid one is refused for its real fault) and a valid one is
/// forwarded exactly as sent, BOM and escapes included. Fails on the gateway before this change, which
/// answered 400 "must be valid JSON" to both.
#[test]
fn json_with_a_bom_or_lone_surrogates_is_validated_and_forwarded_as_sent() {
    let up = Upstream::start();
    let gw = start(&up);
    let json = "application/json";
    let bom = b"\xEF\xBB\xBF{\"email\":\"a@example.com\"}";
    let r = post(&gw, "/links", json, bom);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
    assert_eq!(up.last().body, bom);
    let lone = br#"{"email":"a@example.com","note":"\ud800 and \udc00\ud800x"}"#;
    let r = post(&gw, "/links", json, lone);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
    assert_eq!(up.last().body, lone);
    // 21 lone surrogates are 21 characters: one more than `maxLength: 20`
    let note = r"\ud800".repeat(21);
    let body = format!(r#"{{"email":"a@example.com","note":"{note}"}}"#);
    let r = post(&gw, "/links", json, body.as_bytes());
    assert_refused(
        &r,
        400,
        "Invalid request body: /note must be at most 20 characters long",
        ("body", "/note"),
    );
}

/// Fault model: a body that fails in thirty places and a value outside a 1000-value `enum`.
/// Must hold: at most 10 `errors[]` entries, and the enum is never rendered whole: its
/// message names the first five values and how many more, and the refusal stays small.
/// Fails on the gateway before this change, which rendered the enum as one clipped list.
#[test]
fn ten_errors_at_most_and_an_enum_is_never_rendered_whole() {
    let up = Upstream::start();
    let gw = start(&up);
    let json = "application/json";
    let r = post(&gw, "/links", json, br#"{"email":"a@example.com","lang":"xx"}"#);
    assert_refused(
        &r,
        400,
        "Invalid request body: /lang must be one of: \"l0\", \"l1\", \"l2\", \"l3\", \"l4\" and 995 more",
        ("body", "/lang"),
    );
    assert!(r.body.len() < 600, "{} bytes", r.body.len());
    let extra: Vec<String> = (0..30).map(|i| format!("\"x{i}\":1")).collect();
    let r = post(&gw, "/links", json, format!("{{{}}}", extra.join(",")).as_bytes());
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(r.json()["errors"].as_array().map(Vec::len), Some(10), "{r}");
    assert_eq!(up.count(), 0);
}

/// Fault model: a `pattern` that needs backtracking (look-around and a back-reference),
/// allowed by the operation's `x-authgate: {allow_backtracking_patterns: true}`, against
/// strings that make it backtrack catastrophically. Must hold: the request is 400
/// `invalid_request` saying the value "could not be checked" (never let through), nothing
/// reaches the upstream, and a value the pattern matches quickly passes. Fails on the gateway
/// before this change, which refused `allow_backtracking_patterns` as an unknown x-authgate key.
#[test]
fn a_backtracking_pattern_over_its_budget_is_refused() {
    let up = Upstream::start();
    let gw = start(&up);
    let codes: Vec<String> = (0..24).map(|_| "a".repeat(38)).collect();
    let body = serde_json::to_vec(&json!({"codes": codes})).unwrap();
    let r = post(&gw, "/codes", "application/json", &body);
    assert_refused(
        &r,
        400,
        "Invalid request body: could not be checked: its pattern needs more backtracking than one request may spend",
        ("body", ""),
    );
    assert_eq!(up.count(), 0);
    let r = post(&gw, "/codes", "application/json", br#"{"codes":["aab","ab"]}"#);
    assert_eq!((r.status, r.proxied()), (200, true), "{r}");
}

/// Fault model: what the operator can see of bodies forwarded unchecked under `report`.
/// Must hold: `authgate_validation_failures_total{location="body_not_checked"}` is exported
/// from the start for every spec route, at 0. Fails on the gateway before this change, which had no
/// such location.
#[test]
fn body_not_checked_is_pre_registered() {
    let up = Upstream::start();
    let gw = start(&up);
    let m = gw.metrics();
    for route in ["createLink", "signup", "listOrgs", "postCode"] {
        let series = m
            .matching(
                "authgate_validation_failures_total",
                &[("route", route), ("location", "body_not_checked")],
            )
            .count();
        assert_eq!(series, 1, "{route}");
    }
    assert_eq!(
        m.sum(
            "authgate_validation_failures_total",
            &[("location", "body_not_checked")]
        ),
        0.0
    );
}

/// `authgate check` on `authgate.toml` naming `api.yaml`; answers its exit code and output.
fn check(spec: &str, table_extra: &str) -> CliOutput {
    let mut text = base_config();
    text.push_str(&format!(
        "\n[[openapi]]\nspec = \"api.yaml\"\ndefaults = {{ auth = \"partner\", limits = [\"partner\"] }}\n{table_extra}"
    ));
    ConfDir::new("reading-check", &text, &base_policy(), &[("api.yaml", spec.as_bytes())]).check()
}

fn one_op(x_authgate: &str, rest: &str) -> String {
    format!("openapi: 3.1.0\ninfo: {{title: t, version: '1'}}\npaths:\n  /a:\n    post:\n      operationId: a\n{x_authgate}{rest}")
}

const MULTIPART: &str = "      requestBody:\n        content:\n          multipart/form-data:\n            schema: {type: object, properties: {file: {type: string}}}\n";
const LOOKAHEAD: &str = "      requestBody:\n        content:\n          application/json:\n            schema: {type: string, pattern: '^(?=.*[0-9]).+$'}\n";
const UNTYPED: &str =
    "      parameters:\n        - name: limit\n          in: query\n          schema: {maximum: 100}\n";

/// Fault model: specs the gateway could not enforce as written: a `multipart/form-data`
/// body with a schema, a look-around `pattern` without the opt-in, a parameter with
/// `maximum` and no type (its value would stay text, which `maximum` ignores), and a
/// `held_body_max` above what pingora forwards. Must hold: `authgate check` exits 1 naming
/// each at `file:line`; with `x-authgate` `validate: off` or `allow_backtracking_patterns`
/// the same spec passes. Fails on the gateway before this change, whose check passed all of them.
#[test]
fn check_names_what_the_gateway_could_not_enforce_at_its_line() {
    for (rest, line, needle) in [
        (
            MULTIPART,
            10,
            "\"multipart/form-data\" has a schema the gateway cannot check",
        ),
        (LOOKAHEAD, 10, "needs a backtracking regex engine"),
        (
            UNTYPED,
            10,
            "parameter \"limit\": maximum with no integer or number type",
        ),
    ] {
        let out = check(&one_op("", rest), "");
        assert_eq!(out.code(), Some(1), "{}", out.all());
        let want = format!("api.yaml:{line}: ");
        let hit = out.stdout.lines().any(|l| l.contains(&want) && l.contains(needle));
        assert!(hit, "{want}{needle} missing:\n{}", out.all());
    }
    let out = check(&one_op("      x-authgate: {validate: 'off'}\n", MULTIPART), "");
    assert_eq!((out.code(), out.stdout.trim()), (Some(0), "ok"), "{}", out.all());
    let out = check(
        &one_op("      x-authgate: {allow_backtracking_patterns: true}\n", LOOKAHEAD),
        "",
    );
    assert_eq!((out.code(), out.stdout.trim()), (Some(0), "ok"), "{}", out.all());
    let out = check(
        &one_op("", MULTIPART),
        "\n[[openapi.operations]]\nid = \"a\"\nvalidate = \"off\"\n",
    );
    assert_eq!((out.code(), out.stdout.trim()), (Some(0), "ok"), "{}", out.all());
    let out = check(&one_op("", MULTIPART), "validate = \"off\"\n");
    assert_eq!(
        (out.code(), out.stdout.trim()),
        (Some(0), "ok"),
        "the table's validate: {}",
        out.all()
    );
    let out = check(&one_op("", ""), "held_body_max = \"128KiB\"\n");
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("authgate.toml:") && out.stdout.contains("is more than 64KiB"),
        "{}",
        out.all()
    );
    let out = check(&one_op("      x-authgate: {validate: report}\n", ""), "");
    assert!(
        out.stdout.contains("an operation may only turn its validation \"off\""),
        "{}",
        out.all()
    );
}
