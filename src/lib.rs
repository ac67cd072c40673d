//! authgate: an authenticating reverse-proxy gateway on pingora for the OpenCX Partner API.
//!
//! `policy` holds the security layers as pure decisions; `config` turns files into
//! validated settings; `proxy` is the pingora plumbing that gathers facts, calls the
//! layers in pipeline order (docs/reference.md#pipeline) and writes responses.
#![forbid(unsafe_code)]
// Without the gateway (the fuzz build) the runtime's consumers of many settings are absent.
#![cfg_attr(not(feature = "gateway"), allow(dead_code, unused_imports))]

pub(crate) mod access_log;
#[cfg(feature = "gateway")]
pub(crate) mod admin;
pub mod config;
#[cfg(feature = "gateway")]
pub mod demo;
#[cfg(feature = "gateway")]
pub(crate) mod gateway;
pub(crate) mod ip_text;
pub mod journal;
pub(crate) mod json_text;
#[cfg(feature = "gateway")]
pub(crate) mod jwks_fetch;
pub mod logging;
#[cfg(feature = "gateway")]
pub(crate) mod metrics;
pub mod mint;
pub mod openapi;
#[cfg(feature = "gateway")]
pub mod ops;
pub(crate) mod path_text;
pub mod policy;
#[cfg(feature = "gateway")]
pub(crate) mod proxy;
#[cfg(feature = "gateway")]
pub mod server;
#[cfg(feature = "gateway")]
pub(crate) mod shared;
pub(crate) mod state_file;
#[cfg(feature = "gateway")]
pub(crate) mod tls;
