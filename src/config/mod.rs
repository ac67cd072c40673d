//! Configuration: file structs (serde, unknown keys refused) -> validated, immutable
//! settings and policy. Every problem names its file and line; loading reports all of them.

pub mod file;
pub mod jwks;
pub mod load;
pub mod problem;
pub mod settings;
pub mod validate;

pub use load::{load, load_policy_files, Loaded, PolicyFiles};
pub use problem::{Problem, Problems};
pub use settings::{JwksSettings, KeyMaterial, KeySource, LogFormat, Settings, UpstreamSettings};
