//! Configuration: file structs (serde, unknown keys refused) -> validated, immutable
//! settings and policy. Every problem names its file and line; loading reports all of them.

pub(crate) mod cloudflare;
pub(crate) mod demo_keys;
pub(crate) mod file;
pub(crate) mod jwks;
pub mod load;
pub(crate) mod policy_file;
pub(crate) mod problem;
pub mod routes_report;
pub(crate) mod settings;
#[cfg(feature = "gateway")]
pub(crate) mod tls_files;
pub mod validate;

pub use load::{load, load_policy_files, Loaded, PolicyFiles};
pub use problem::{Problem, Problems};
pub use settings::{Deadlines, LogFormat, Settings};
pub(crate) use settings::{KeyMaterial, KeySource};
