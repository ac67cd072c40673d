//! Criterion bench for edge validation: a valid create-org body of ~1 KB, ~4 KB and 64 KiB
//! against the shipped `config/openapi/partner-api.yaml`, head and body checks together, as
//! the proxy runs them per request (targets: <= 10 us and <= 25 us for the first two). Also
//! the spec-path lookup alone.
//!
//! The cost bounds of docs/reference.md (the OpenAPI section; target: no request spends
//! more than 50 ms validating, whatever the spec says): a look-around `pattern` allowed by
//! `allow_backtracking_patterns` against a 1 KB body that backtracks catastrophically; a
//! 100,000-value `enum` against a 64 KiB body of misses; the audit's `$ref` fan-out (depth
//! 21) against a 1-byte invalid body; a 64 KiB body with thousands of failures; and the
//! compile of a generated 1 MB spec with 200 operations (target: under 3 s; its memory:
//! `examples/openapi_compile.rs`).
//!
//! `cargo bench --bench openapi`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use serde_json::json;

use authgate::openapi::{compile, BodyPlan, CompiledSpec, RequestHead, RouteOutcome};

#[path = "support/openapi_shapes.rs"]
mod shapes;

const SPEC: &str = include_str!("../config/openapi/partner-api.yaml");

/// A valid create-org body of about `size` bytes (the AI profile makes up the length).
fn create_org_body(size: usize, integrations: bool) -> Vec<u8> {
    let mut body = json!({
        "name": "Acme Tours",
        "external_id": "customer-12345",
        "website": "https://acmetours.example",
        "language": "en",
        "ai_instructions": "",
    });
    if integrations {
        body["integrations"] = json!({
            "example_integration": [
                {"name": "Account A", "app_key": "a".repeat(64), "user_key": "u".repeat(64)},
                {"name": "Account B", "app_key": "b".repeat(64), "user_key": "v".repeat(64)},
            ],
            "other_integration": {"name": "Primary", "token": "t".repeat(128)},
        });
    }
    let base = serde_json::to_vec(&body).unwrap().len();
    let sentence = "You are a support agent for Acme Tours. Help customers with bookings and questions. ";
    body["ai_instructions"] = json!(sentence.repeat(size.saturating_sub(base) / sentence.len() + 1)[..size - base]);
    serde_json::to_vec(&body).unwrap()
}

fn json_headers(len: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from(len));
    headers.insert("authorization", HeaderValue::from_static("Bearer x.y.z"));
    headers
}

/// Routes `POST path`, checks the head, checks the held body: what a POST costs at the edge.
/// Answers whether the body was accepted.
fn validate(spec: &CompiledSpec, path: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let RouteOutcome::Match { operation, captures } = spec.find("POST", path.as_bytes(), false) else {
        panic!("POST {path} routes");
    };
    let op = &spec.operations()[operation];
    let head = RequestHead {
        captures: &captures,
        query: None,
        headers,
    };
    let Ok(BodyPlan::Hold(held)) = op.check_head(&head) else {
        panic!("the head is valid and its body is held");
    };
    op.check_body(held, body).is_ok()
}

fn valid_bodies(c: &mut Criterion) {
    let spec = compile(Path::new("partner-api.yaml"), SPEC, "").unwrap();
    for (name, size, integrations) in [("1KB", 1024, false), ("4KB", 4096, true), ("64KiB", 65_536, true)] {
        let body = create_org_body(size, integrations);
        assert_eq!(body.len(), size);
        let headers = json_headers(body.len());
        c.bench_function(&format!("openapi/validate create-org {name}"), |b| {
            b.iter(|| {
                assert!(validate(
                    black_box(&spec),
                    "/partner/v1/orgs",
                    black_box(&headers),
                    black_box(&body)
                ))
            })
        });
    }
    c.bench_function("openapi/find login-links", |b| {
        b.iter(|| {
            spec.find(
                black_box("POST"),
                black_box(b"/partner/v1/orgs/a1b2c3d4/login-links"),
                false,
            )
        })
    });
}

/// Shapes the spec may take, each refused (never let through) within the bound.
fn cost_bounds(c: &mut Criterion) {
    let shapes = [
        ("look-around pattern 1KB", shapes::lookaround()),
        ("100k enum 64KiB of misses", shapes::big_enum()),
        ("ref fan-out depth 21 1B", shapes::ref_fanout(false)),
        ("64KiB of failures", shapes::many_failures()),
    ];
    for (name, (text, body)) in shapes {
        let spec = compile(Path::new("shape.json"), &text, "").unwrap();
        let headers = json_headers(body.len());
        c.bench_function(&format!("openapi/refuse {name}"), |b| {
            b.iter(|| {
                assert!(!validate(
                    black_box(&spec),
                    "/shape",
                    black_box(&headers),
                    black_box(&body)
                ))
            })
        });
    }
}

fn big_spec(c: &mut Criterion) {
    let text = shapes::big_spec(200, 1_000_000, true);
    let mut group = c.benchmark_group("openapi/compile");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("1MB 200 operations", |b| {
        b.iter(|| compile(Path::new("big.json"), black_box(&text), "").unwrap())
    });
    group.finish();
}

criterion_group!(benches, valid_bodies, cost_bounds, big_spec);
criterion_main!(benches);
