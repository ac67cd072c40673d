//! Compiles a generated OpenAPI spec the way `authgate check` and the gateway's start do, and
//! prints its size and the time it took: the cost bound "a 1 MB spec with 200 operations
//! compiles in under 3 s and under 300 MB" (docs/reference.md, the OpenAPI section), measured
//! with the peak RSS of the whole process:
//!
//! ```text
//! cargo build --release --example openapi_compile
//! /usr/bin/time -v target/release/examples/openapi_compile 200 1000000 chain
//! ```
//!
//! Arguments: operations (200), spec bytes (1000000), `chain` (every operation reaches every
//! component) or `tree`.

use std::path::Path;
use std::time::Instant;

use authgate::openapi::{BodyPlan, CompiledSpec, RequestHead, RouteOutcome};
use http::{HeaderMap, HeaderValue};

#[path = "../benches/support/openapi_shapes.rs"]
mod shapes;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ops = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let bytes = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let chain = args.get(3).is_none_or(|a| a == "chain");
    let text = shapes::big_spec(ops, bytes, chain);
    let start = Instant::now();
    let spec = authgate::openapi::compile(Path::new("big.json"), &text, "");
    let took = start.elapsed();
    match spec {
        Ok(spec) => {
            println!(
                "compiled {} bytes, {} operations ({}) in {:.2} s",
                text.len(),
                spec.operations().len(),
                if chain { "chain" } else { "tree" },
                took.as_secs_f64()
            );
            checks_bodies(&spec);
        }
        Err(problems) => {
            for p in problems.iter().take(5) {
                eprintln!("{p}");
            }
            std::process::exit(1);
        }
    }
}

/// The compiled spec still checks what it says: the first operation's body is refused for a
/// field out of range, deep inside the shared components, and accepted when it is right.
fn checks_bodies(spec: &CompiledSpec) {
    let RouteOutcome::Match { operation, captures } = spec.find("POST", b"/things0/x", false) else {
        eprintln!("POST /things0/x does not route");
        std::process::exit(1);
    };
    let op = &spec.operations()[operation];
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from_static("100"));
    let head = RequestHead {
        captures: &captures,
        query: None,
        headers: &headers,
    };
    let Ok(BodyPlan::Hold(held)) = op.check_head(&head) else {
        eprintln!("the body of {} is not held", op.id());
        std::process::exit(1);
    };
    let good = br#"{"field_0":"a","field_1":1,"shared":{"field_0":"b","field_1":2}}"#;
    let bad = br#"{"field_0":"a","field_1":1,"shared":{"field_0":"b","field_1":-2}}"#;
    match (op.check_body(held, good), op.check_body(held, bad)) {
        (Ok(()), Err(r)) => println!("{}: a valid body passes; {}", op.id(), r.message),
        other => {
            eprintln!("unexpected verdicts: {other:?}");
            std::process::exit(1);
        }
    }
}
