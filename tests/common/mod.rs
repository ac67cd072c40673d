//! Shared harness for the end-to-end tests: they start the real `authgate` binary with a
//! config in a fresh temp dir, in front of an in-process recording upstream, and talk to it
//! over TCP with a raw HTTP/1.1 client that sends the request target verbatim.
//!
//! Rules the helpers keep: no fixed ports (bind 127.0.0.1:0, release, retry on "in use"),
//! no sleeps as synchronisation (everything polls with a deadline), every process started
//! is stopped in `Drop`, every temp dir is removed.
//!
//! By concern: [`client`] (the HTTP/1.1 client and the checks of gateway-written answers),
//! [`upstream`] (the one fake upstream, also the backends of a cluster), [`tokens`] (keys,
//! claims, signing, JWKS), [`processes`] (the gateway process, CLI runs, signals, temp dirs,
//! ports), [`config`] (the base config and policy), [`metrics`] (reading `/metrics`),
//! [`redis`] (a real `redis-server`) and [`relay`] (a TCP relay that injects faults).

pub mod client;
pub mod config;
pub mod frameworks;
pub mod metrics;
pub mod processes;
pub mod redis;
pub mod relay;
pub mod tls;
pub mod tokens;
pub mod upstream;

use std::time::{Duration, Instant};

pub use client::*;
pub use config::*;
pub use metrics::*;
pub use processes::*;
pub use tokens::*;
pub use upstream::*;

/// Generous bound for anything the gateway should do "soon" on a loaded CI box.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts an upstream and a gateway with the base config and policy.
pub fn base() -> (Upstream, Gateway) {
    base_with(&base_config())
}

/// Starts an upstream and a gateway with `config` and the base policy.
pub fn base_with(config: &str) -> (Upstream, Gateway) {
    let up = Upstream::start();
    let gw = Gateway::start(&up.address(), config, &base_policy(), &[]);
    (up, gw)
}
