//! The security layers as pure decisions: no sockets, no pingora. Each module is one
//! layer; [`pipeline::decide`] runs them in docs/reference.md#pipeline order.

pub mod client_ip;
pub(crate) mod denial;
pub mod directory;
pub mod framing;
pub mod identity;
pub mod ip_set;
pub(crate) mod jose_header;
pub mod jwt;
pub mod method;
pub mod ownership;
pub mod path;
pub mod pipeline;
pub mod principal;
pub mod rate_limit;
pub(crate) mod response_headers;
pub mod revocations;
pub mod routes;
pub mod spec_routes;
pub mod token_cache;
pub(crate) mod upstream_headers;
