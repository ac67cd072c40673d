//! cargo fuzz run config_load: the checks live in ../harness.rs, shared with tests/e2e/fuzz_regressions.rs.
#![no_main]

#[path = "../harness.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::config_load(data));
