//! The one integration-test binary: every end-to-end and repository check, one module per
//! area. Each file directly under `tests/` would be a test binary of its own, linking the
//! crate and pingora again; this one links them once (`layout::one_test_binary` keeps it so).
//!
//! Run one area with `cargo test --release --test e2e <area>::`, e.g. `faults::`.

// Tests panic on anything unexpected; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod connections;
mod core;
mod deploy;
mod differentials;
mod docs;
mod edge_reads;
mod faults;
mod frameworks;
mod fuzz_regressions;
mod hardening;
mod house;
mod jwks;
mod layout;
mod openapi;
mod orgapi;
mod ratelimit;
mod reading;
mod reload;
mod scaleout;
mod security;
mod shipped;
mod tls;
mod upstreams;
