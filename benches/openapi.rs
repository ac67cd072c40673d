//! Criterion bench for edge validation (issue 26): a valid create-org body of ~1 KB and ~4 KB
//! against the shipped `config/openapi/partner-api.yaml`, head and body checks together, as
//! the proxy runs them per request (targets: <= 10 us and <= 25 us). Also the spec-path
//! lookup alone.
//!
//! `cargo bench --no-default-features --bench openapi`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use serde_json::json;

use authgate::openapi::{compile, BodyPlan, CompiledSpec, RequestHead, RouteOutcome};

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

/// Routes, checks the head, checks the held body: what a valid POST costs at the edge.
fn validate(spec: &CompiledSpec, headers: &HeaderMap, body: &[u8]) {
    let RouteOutcome::Match { operation, captures } = spec.find("POST", b"/partner/v1/orgs", false) else {
        panic!("createOrg routes");
    };
    let op = &spec.operations()[operation];
    let head = RequestHead {
        captures: &captures,
        query: None,
        headers,
    };
    let Ok(BodyPlan::Hold(held)) = op.check_head(&head) else {
        panic!("the create-org head is valid and its body is held");
    };
    op.check_body(held, body).unwrap();
}

fn bench(c: &mut Criterion) {
    let spec = compile(Path::new("partner-api.yaml"), SPEC, "").unwrap();
    for (name, size, integrations) in [("1KB", 1024, false), ("4KB", 4096, true)] {
        let body = create_org_body(size, integrations);
        assert_eq!(body.len(), size);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from(body.len()));
        headers.insert("authorization", HeaderValue::from_static("Bearer x.y.z"));
        c.bench_function(&format!("openapi/validate create-org {name}"), |b| {
            b.iter(|| validate(black_box(&spec), black_box(&headers), black_box(&body)))
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

criterion_group!(benches, bench);
criterion_main!(benches);
