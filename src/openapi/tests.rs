//! The compiler end to end: the shipped specs, problems as `file:line: message`, and the
//! request checks through the public API the proxy will call.

use std::path::Path;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

const PARTNER: &str = include_str!("../../config/openapi/partner-api.yaml");
const ORG: &str = include_str!("../../config/openapi/org-api.yaml");

fn partner() -> CompiledSpec {
    compile(Path::new("openapi/partner-api.yaml"), PARTNER, "").unwrap()
}

fn problems(text: &str) -> Vec<String> {
    compile(Path::new("spec.yaml"), text, "")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn op<'s>(spec: &'s CompiledSpec, id: &str) -> &'s Operation {
    spec.operations().iter().find(|o| o.id() == id).unwrap()
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

/// Routes and runs both checks, as the proxy will: `Ok(plan)` or the rejection.
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

fn json_post(spec: &CompiledSpec, target: &str, body: &str) -> Result<BodyPlan, Rejection> {
    let len = body.len().to_string();
    request(
        spec,
        "POST",
        target,
        &[("content-type", "application/json"), ("content-length", &len)],
        body.as_bytes(),
    )
}

fn refused(r: Result<BodyPlan, Rejection>) -> (u16, String, Vec<(Location, String, String)>) {
    let r = r.unwrap_err();
    (
        r.status,
        r.message,
        r.errors
            .into_iter()
            .map(|e| (e.location, e.pointer, e.message))
            .collect(),
    )
}

#[test]
fn the_shipped_specs_compile() {
    let spec = partner();
    let ops: Vec<(&str, &str, &str)> = spec
        .operations()
        .iter()
        .map(|o| (o.id(), o.method(), o.path()))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("createOrg", "POST", "/partner/v1/orgs"),
            ("listOrgs", "GET", "/partner/v1/orgs"),
            (
                "getOrgByExternalId",
                "GET",
                "/partner/v1/orgs/by-external-id/{externalId}"
            ),
            ("createOrgApiKey", "POST", "/partner/v1/orgs/{orgId}/api-keys"),
            ("createLoginLink", "POST", "/partner/v1/orgs/{orgId}/login-links"),
        ]
    );
    let link = op(&spec, "createLoginLink");
    assert_eq!(
        link.x_authgate().unwrap().0,
        &json!({"org_param": "orgId", "limits": ["partner", "login-links"]})
    );
    assert_eq!(link.path_params(), ["orgId"]);
    assert_eq!(link.summary(), "path orgId; body application/json (schema) required");
    assert_eq!(op(&spec, "listOrgs").summary(), "query limit, offset");
    assert_eq!(
        op(&spec, "createOrg").x_authgate().unwrap().0,
        &json!({"learn_org_from_response": "/id"})
    );
    // `file:line` of the method key and of x-authgate, for the integrator's messages
    let line = |needle: &str| PARTNER.lines().position(|l| l.trim_end() == needle).unwrap() + 1;
    assert_eq!(
        link.location().to_string(),
        format!(
            "openapi/partner-api.yaml:{}",
            line("  /partner/v1/orgs/{orgId}/login-links:") + 1
        )
    );
    assert_eq!(
        link.x_authgate().unwrap().1.line,
        Some(line("  /partner/v1/orgs/{orgId}/login-links:") + 7)
    );
    assert!(spec
        .operations()
        .iter()
        .all(|o| o.needs_body() == (o.method() == "POST")));

    let org = compile(Path::new("openapi/org-api.yaml"), ORG, "").unwrap();
    let ops: Vec<(&str, &str, &str)> = org
        .operations()
        .iter()
        .map(|o| (o.id(), o.method(), o.path()))
        .collect();
    assert_eq!(
        ops,
        vec![("getOrg", "GET", "/org"), ("getAppizerOrgInfo", "GET", "/v1/org/info")]
    );
    assert_eq!(
        op(&org, "getAppizerOrgInfo").x_authgate().unwrap().0["api_key_header"],
        json!("X-API-Key")
    );
    assert_eq!(op(&org, "getOrg").summary(), "-");
}

#[test]
fn the_shipped_partner_spec_routes_literal_before_template() {
    let spec = partner();
    let id_of = |method: &str, path: &str| match spec.find(method, path.as_bytes(), false) {
        RouteOutcome::Match { operation, captures } => {
            let caps: Vec<(String, String)> = captures
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            Some((spec.operations()[operation].id().to_string(), caps))
        }
        _ => None,
    };
    let pair = |a: &str, b: &str| vec![(a.to_string(), b.to_string())];
    assert_eq!(
        id_of("GET", "/partner/v1/orgs/by-external-id/customer-12345"),
        Some(("getOrgByExternalId".into(), pair("externalId", "customer-12345")))
    );
    assert_eq!(
        id_of("POST", "/partner/v1/orgs/ORG-1/login-links"),
        Some(("createLoginLink".into(), pair("orgId", "ORG-1")))
    );
    assert_eq!(id_of("HEAD", "/Partner/V1/ORGS/"), Some(("listOrgs".into(), vec![])));
    // a documented path with an undocumented method; an undocumented path
    assert_eq!(
        spec.find("DELETE", b"/partner/v1/orgs", false),
        RouteOutcome::MethodNotAllowed {
            allow: "GET, HEAD, POST"
        }
    );
    assert_eq!(
        spec.find("GET", b"/partner/v1/orgs/o/login-links", false),
        RouteOutcome::MethodNotAllowed { allow: "POST" }
    );
    assert_eq!(
        spec.find("POST", b"/partner/v1/orgs/by-external-id/login-links", false),
        RouteOutcome::MethodNotAllowed { allow: "GET, HEAD" }
    );
    assert_eq!(spec.find("GET", b"/partner/v1/orgs/o", false), RouteOutcome::NoMatch);
}

#[test]
fn the_prefix_is_part_of_the_path() {
    let spec = compile(Path::new("p.yaml"), ORG, "/edge/").unwrap();
    assert_eq!(spec.operations()[0].path(), "/edge/org");
    assert!(matches!(
        spec.find("GET", b"/edge/org", false),
        RouteOutcome::Match { operation: 0, .. }
    ));
    assert_eq!(spec.find("GET", b"/org", false), RouteOutcome::NoMatch);
    let err = compile(Path::new("p.yaml"), ORG, "edge").unwrap_err();
    // reported on the document (the integrator checks the TOML value first, with check_prefix)
    assert_eq!(
        err[0].to_string(),
        "p.yaml:8: prefix \"edge\" must be empty or a path like \"/api/v1\" (no templates)"
    );
    assert_eq!(check_prefix("/edge/"), Ok("/edge"));
    assert_eq!(check_prefix(""), Ok(""));
    assert_eq!(check_prefix("/"), Ok(""));
    assert!(compile(Path::new("p.yaml"), ORG, "/{x}").is_err());
}

#[test]
fn problems_name_file_and_line_and_are_all_reported() {
    let text = "openapi: 3.1.0
paths:
  /a/{x}:
    get:
      operationId: one
      parameters:
        - {name: x, in: path, required: true}
    post:
      responses: {}
  /a/{y}:
    get:
      operationId: two
      parameters:
        - {name: y, in: path, required: true, schema: {$ref: 'https://example.com/s.json'}}
  /b:
    get:
      operationId: one
";
    assert_eq!(problems(text), vec![
        "spec.yaml:8: operation POST /a/{x} has no operationId: every operation becomes a route named by it",
        "spec.yaml:11: operations \"one\" (GET /a/{x}) and \"two\" (GET /a/{y}) match the same requests: rename a path segment or merge them",
        "spec.yaml:14: remote $ref \"https://example.com/s.json\" is not supported: the gateway never fetches; copy it under #/components/",
        "spec.yaml:17: operationId \"one\" of GET /b is also the operationId of GET /a/{x}: route names must be unique",
    ]);
}

#[test]
fn documents_that_are_not_3_1_are_refused() {
    assert_eq!(problems("openapi: 3.0.3\npaths: {}\n"), vec![
        "spec.yaml:1: OpenAPI 3.0.3 is not supported: only 3.1 (its schemas are JSON Schema 2020-12; 3.0's nullable and boolean exclusiveMinimum are not)",
    ]);
    assert_eq!(
        problems("swagger: '2.0'\n"),
        vec!["spec.yaml:1: Swagger 2.0 is not supported: convert the spec to OpenAPI 3.1"]
    );
    assert_eq!(
        problems("openapi: 3.1.0\npaths:\n  /a: [\n"),
        vec!["spec.yaml:4: not valid YAML or JSON: while parsing a node, did not find expected node content",]
    );
    let json = "{\n  \"openapi\": \"3.1.0\",\n  \"paths\": {\"/a\": {\"get\": {}}}\n}\n";
    assert_eq!(
        problems(json),
        vec!["spec.yaml:3: operation GET /a has no operationId: every operation becomes a route named by it"]
    );
}

#[test]
fn bad_schemas_are_problems_at_their_line() {
    let text = "openapi: 3.1.0
paths:
  /a:
    post:
      operationId: a
      parameters:
        - name: q
          in: query
          schema: {type: strin}
      requestBody:
        content:
          application/json:
            schema: {type: object, pattern: '('}
          nonsense: {}
";
    let got = problems(text);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0].starts_with("spec.yaml:9: the schema cannot be compiled"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("spec.yaml:13: the schema cannot be compiled"),
        "{got:#?}"
    );
    assert_eq!(got[2], "spec.yaml:14: \"nonsense\" is not a media type (type/subtype)");
}

#[test]
fn bodies_are_checked_against_their_schema() {
    let spec = partner();
    let orgs = "/partner/v1/orgs";
    assert!(matches!(
        json_post(&spec, orgs, r#"{"name":"Acme Tours","external_id":"c-1"}"#),
        Ok(BodyPlan::Hold(_))
    ));
    assert_eq!(
        refused(json_post(&spec, orgs, r#"{"external_id":"c-1"}"#)),
        (
            400,
            "Invalid request body: /name is required".into(),
            vec![(Location::Body, "/name".into(), "is required".into())],
        )
    );
    assert_eq!(
        refused(json_post(&spec, orgs, r#"{"name":""}"#)).1,
        "Invalid request body: /name must be at least 1 characters long"
    );
    assert_eq!(
        refused(json_post(&spec, orgs, r#"[]"#)).1,
        "Invalid request body: must be an object"
    );
    assert_eq!(
        refused(json_post(&spec, orgs, r#"{"name":"a","integrations":{"x":[]}}"#)).1,
        "Invalid request body: /integrations/x must match one of the allowed schemas"
    );
    assert!(json_post(
        &spec,
        orgs,
        r#"{"name":"a","integrations":{"x":{"name":"A"},"y":[{"name":"B"}]}}"#
    )
    .is_ok());
    let link = "/partner/v1/orgs/o-1/login-links";
    assert_eq!(
        refused(json_post(&spec, link, r#"{"email":"nope","role_ids":["x"]}"#)),
        (
            400,
            "Invalid request body: /email must be a valid email".into(),
            vec![
                (Location::Body, "/email".into(), "must be a valid email".into()),
                (Location::Body, "/role_ids/0".into(), "must be a valid uuid".into()),
            ],
        )
    );
    assert_eq!(
        refused(json_post(&spec, link, "{\"email\": ")).1,
        "Invalid request body: must be valid JSON: EOF while parsing a value at line 1 column 10"
    );
}

#[test]
fn at_most_ten_errors_are_listed() {
    let spec = compile(
        Path::new("s.yaml"),
        "openapi: 3.1.0
paths:
  /a:
    post:
      operationId: a
      requestBody:
        content:
          application/json:
            schema: {type: object, properties: {a: {}}, additionalProperties: false}
",
        "",
    )
    .unwrap();
    let body: String = format!(
        "{{{}}}",
        (0..30).map(|i| format!("\"k{i}\":1")).collect::<Vec<_>>().join(",")
    );
    let r = json_post(&spec, "/a", &body).unwrap_err();
    assert_eq!(r.errors.len(), MAX_ERRORS);
    assert_eq!(r.message, "Invalid request body: /k0 is not allowed");
}

#[test]
fn a_required_body_that_is_missing() {
    let spec = partner();
    let orgs = "/partner/v1/orgs";
    // required body missing (no Content-Length, or zero)
    assert_eq!(
        refused(request(
            &spec,
            "POST",
            orgs,
            &[("content-type", "application/json")],
            b""
        ))
        .1,
        "Invalid request body: a body is required"
    );
    assert_eq!(
        refused(request(&spec, "POST", orgs, &[("content-length", "0")], b"")).1,
        "Invalid request body: a body is required"
    );
}

#[test]
fn the_media_type_of_a_body() {
    let spec = partner();
    let orgs = "/partner/v1/orgs";
    let body = br#"{"name":"a"}"#;
    // charset ignored, case-insensitive; others 415; none 415
    assert!(request(
        &spec,
        "POST",
        orgs,
        &[
            ("content-type", "Application/JSON; charset=utf-8"),
            ("content-length", "12")
        ],
        body
    )
    .is_ok());
    assert_eq!(
        refused(request(
            &spec,
            "POST",
            orgs,
            &[("content-type", "text/plain"), ("content-length", "12")],
            body
        )),
        (
            415,
            "Unsupported media type: Content-Type text/plain is not one of: application/json".into(),
            vec![(
                Location::MediaType,
                "Content-Type".into(),
                "Content-Type text/plain is not one of: application/json".into()
            )],
        )
    );
    assert_eq!(
        refused(request(&spec, "POST", orgs, &[("content-length", "12")], body)).1,
        "Unsupported media type: Content-Type is required: expected application/json"
    );
    let r = request(
        &spec,
        "POST",
        orgs,
        &[
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
            ("content-length", "12"),
        ],
        body,
    )
    .unwrap_err();
    assert_eq!(
        (r.status, r.reason.as_str(), r.message.as_str()),
        (
            415,
            "unsupported_media_type",
            "Unsupported media type: Content-Type must be given once"
        )
    );
}

#[test]
fn chunked_and_optional_bodies() {
    let spec = partner();
    let orgs = "/partner/v1/orgs";
    let body = br#"{"name":"a"}"#;
    // a chunked body is held and checked too; an empty chunked body on a required body is refused
    assert!(request(
        &spec,
        "POST",
        orgs,
        &[("content-type", "application/json"), ("transfer-encoding", "chunked")],
        body
    )
    .is_ok());
    assert_eq!(
        refused(request(
            &spec,
            "POST",
            orgs,
            &[("content-type", "application/json"), ("transfer-encoding", "chunked")],
            b""
        ))
        .1,
        "Invalid request body: a body is required"
    );
    // an optional body may be absent, or empty when chunked
    let keys = "/partner/v1/orgs/o-1/api-keys";
    assert_eq!(request(&spec, "POST", keys, &[], b""), Ok(BodyPlan::None));
    assert!(request(
        &spec,
        "POST",
        keys,
        &[("content-type", "application/json"), ("transfer-encoding", "chunked")],
        b""
    )
    .is_ok());
    assert_eq!(
        refused(json_post(&spec, keys, r#"{"name":1}"#)).1,
        "Invalid request body: /name must be a string"
    );
}

#[test]
fn a_body_on_an_operation_without_request_body() {
    let spec = partner();
    let list = "/partner/v1/orgs?limit=5";
    assert_eq!(request(&spec, "GET", list, &[], b""), Ok(BodyPlan::None));
    assert_eq!(
        request(&spec, "GET", list, &[("content-length", "0")], b""),
        Ok(BodyPlan::None)
    );
    assert_eq!(
        refused(request(&spec, "GET", list, &[("content-length", "2")], b"{}")),
        (
            400,
            "Invalid request body: this operation takes no body".into(),
            vec![(Location::Body, String::new(), "this operation takes no body".into())],
        )
    );
    // chunked: held to prove it empty
    assert!(matches!(
        request(&spec, "GET", list, &[("transfer-encoding", "chunked")], b""),
        Ok(BodyPlan::Hold(_))
    ));
    assert_eq!(
        refused(request(&spec, "GET", list, &[("transfer-encoding", "chunked")], b"x")).1,
        "Invalid request body: this operation takes no body"
    );
    assert!(!op(&spec, "listOrgs").needs_body());
}

#[test]
fn query_and_path_parameters() {
    let spec = partner();
    assert!(request(&spec, "GET", "/partner/v1/orgs?limit=10&offset=0&other=x", &[], b"").is_ok());
    assert_eq!(
        refused(request(&spec, "GET", "/partner/v1/orgs?limit=500", &[], b"")),
        (
            400,
            "Invalid query parameter limit: must be at most 100".into(),
            vec![(Location::Query, "limit".into(), "must be at most 100".into())],
        )
    );
    let r = request(&spec, "GET", "/partner/v1/orgs?limit=0&offset=-1&limit=2", &[], b"").unwrap_err();
    assert_eq!(r.message, "Invalid query parameter limit: must be given once");
    assert_eq!(r.errors[1].message, "must be at least 0");
    assert_eq!(r.locations.iter().collect::<Vec<_>>(), vec![Location::Query]);
    assert_eq!(
        refused(request(&spec, "GET", "/partner/v1/orgs?limit=ten", &[], b"")).1,
        "Invalid query parameter limit: must be an integer"
    );
    assert!(request(&spec, "GET", "/partner/v1/orgs?%6Cimit=1%30", &[], b"").is_ok());
    assert_eq!(
        refused(request(&spec, "GET", "/partner/v1/orgs?%6Cimit=1%30%31", &[], b"")).1,
        "Invalid query parameter limit: must be at most 100"
    );
    // path captures are percent-decoded before the schema sees them
    let text = "openapi: 3.1.0
paths:
  /orgs/{orgId}:
    get:
      operationId: getOrg
      parameters:
        - {name: orgId, in: path, required: true, schema: {type: string, format: uuid}}
        - {name: X-Trace, in: header, required: true, schema: {type: integer}}
";
    let spec = compile(Path::new("s.yaml"), text, "").unwrap();
    let uuid = "/orgs/a1b2c3d4-e5f6-7890-abcd-ef123456789%30";
    assert!(request(&spec, "GET", uuid, &[("x-trace", "7")], b"").is_ok());
    assert_eq!(
        refused(request(&spec, "GET", "/orgs/nope", &[], b"")),
        (
            400,
            "Invalid path parameter orgId: must be a valid uuid".into(),
            vec![
                (Location::Path, "orgId".into(), "must be a valid uuid".into()),
                (Location::Header, "x-trace".into(), "is required".into()),
            ],
        )
    );
    assert_eq!(
        refused(request(&spec, "GET", uuid, &[("x-trace", "x")], b"")).1,
        "Invalid header x-trace: must be an integer"
    );
}

#[test]
fn the_compiled_spec_can_live_in_a_shared_snapshot() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<CompiledSpec>();
}

fn create_org_oracle() -> jsonschema::Validator {
    let spec = partner();
    let op = op(&spec, "createOrg");
    let h = headers(&[("content-type", "application/json"), ("content-length", "1")]);
    let Ok(BodyPlan::Hold(held)) = op.check_head(&RequestHead {
        captures: &[],
        query: None,
        headers: &h,
    }) else {
        panic!("createOrg holds JSON bodies");
    };
    // an independent build, default options but formats asserted
    jsonschema::options()
        .should_validate_formats(true)
        .build(&op.held_schema(held).unwrap())
        .unwrap()
}

proptest! {
    #[test]
    fn an_accepted_body_is_one_the_schema_accepts(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]) {
        let spec = partner();
        let oracle = create_org_oracle();
        let len = body.len().to_string();
        let verdict = request(&spec, "POST", "/partner/v1/orgs", &[("content-type", "application/json"), ("content-length", &len)], &body);
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let valid = !body.is_empty() && parsed.as_ref().is_some_and(|v| oracle.is_valid(v));
        prop_assert_eq!(verdict.is_ok(), valid, "{:?}", String::from_utf8_lossy(&body));
        if let Err(r) = verdict {
            prop_assert!(!r.errors.is_empty() && r.errors.len() <= MAX_ERRORS);
            prop_assert!(r.message.starts_with("Invalid request body"));
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z@.]{0,8}".prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("name".to_string()),
        Just("external_id".to_string()),
        Just("integrations".to_string()),
        "[a-z]{1,3}"
    ];
    leaf.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn report_mode_keeps_the_body_plan_of_a_failed_head() {
    let spec = compile(
        Path::new("s.yaml"),
        "openapi: 3.1.0
paths:
  /a:
    post:
      operationId: a
      parameters: [{name: q, in: query, required: true}]
      requestBody:
        content:
          application/json:
            schema: {type: object}
",
        "",
    )
    .unwrap();
    let op = &spec.operations()[0];
    let h = headers(&[("content-type", "application/json"), ("content-length", "2")]);
    let head = RequestHead {
        captures: &[],
        query: None,
        headers: &h,
    };
    let (plan, verdict) = op.check_head_report(&head);
    assert_eq!(verdict.unwrap_err().message, "Invalid query parameter q: is required");
    let BodyPlan::Hold(held) = plan else { panic!("{plan:?}") };
    assert_eq!(
        op.check_body(held, b"[]").unwrap_err().message,
        "Invalid request body: must be an object"
    );
    assert_eq!(
        op.check_head(&head).unwrap_err().message,
        "Invalid query parameter q: is required"
    );
}
