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
        Ok(spec) => println!(
            "compiled {} bytes, {} operations ({}) in {:.2} s",
            text.len(),
            spec.operations().len(),
            if chain { "chain" } else { "tree" },
            took.as_secs_f64()
        ),
        Err(problems) => {
            for p in problems.iter().take(5) {
                eprintln!("{p}");
            }
            std::process::exit(1);
        }
    }
}
