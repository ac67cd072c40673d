//! cargo fuzz run openapi_validate: the checks live in ../harness.rs, shared with tests/fuzz_regressions.rs.
#![no_main]

#[path = "../harness.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::openapi_validate(data));
