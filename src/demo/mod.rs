//! `authgate demo`: the gateway on the shipped config plus an in-memory Partner API.

pub mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;

/// Runs the demo until Ctrl-C.
pub fn run(_config: Option<PathBuf>) -> ExitCode {
    eprintln!("demo: not built yet");
    ExitCode::from(1)
}
