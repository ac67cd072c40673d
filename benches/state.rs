//! Measurements of the shared security state (docs/reference.md#partial-failures), on real
//! `redis-server` processes and real gateways, with the end-to-end harness of tests/. Run by
//! hand; each scenario prints its numbers (README's "Partial failures" quotes them):
//!
//! ```text
//! cargo bench --bench state                 # every scenario
//! cargo bench --bench state -- readiness    # or one: readiness | burst | freeze | learn
//! ```
//!
//! - `readiness`: a new replica (no state file) against 1k / 10k / 100k records in Redis,
//!   from spawn to `/readyz` 200; then the same replica restarted on its state file.
//! - `burst`: 2,000 records published at once; from the end of the publishing script to
//!   every live replica refusing the last record.
//! - `freeze`: 20 trials of a replica frozen (SIGSTOP) past `revocations_max_age` under
//!   `deny` while a key is revoked; requests served 200 with that key after the resume.
//! - `learn`: latency of an unrelated request on a one-worker gateway, alone and while Redis
//!   answers a learned-org write in 0.8 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::redis::{key_token, redis_config, redis_config_on, revoke, store_revocations, wait_redis_up, RedisServer};
use common::relay::Relay;
use common::*;

const PLAIN: &str = "/plain";

fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wanted("readiness") {
        readiness();
    }
    if wanted("burst") {
        burst();
    }
    if wanted("freeze") {
        freeze();
    }
    if wanted("learn") {
        learn();
    }
}

fn status_with(gw: &Gateway, token: &str) -> u16 {
    gw.get_auth(PLAIN, token, &[]).status
}

/// A new replica against `n` records: time to ready; then restarted on its state file.
fn readiness() {
    let up = Upstream::start();
    for n in [0usize, 1_000, 10_000, 100_000] {
        let redis = RedisServer::start();
        let keys: Vec<String> = (0..n).map(|i| format!("seeded-{i}")).collect();
        for chunk in keys.chunks(20_000) {
            store_revocations(&redis, "acme", chunk, false);
        }
        let began = Instant::now();
        let mut gw = Gateway::start(
            &up.address(),
            &redis_config(&redis.url(), "deny", "200ms", "", None),
            &base_policy(),
            &[],
        );
        let fresh = began.elapsed();
        if n > 0 {
            assert_eq!(status_with(&gw, &key_token("acme", &format!("seeded-{}", n - 1))), 401);
        }
        gw.stop(Duration::from_secs(30));
        let began = Instant::now();
        gw.start_again(StartOpts::default());
        let restarted = began.elapsed();
        println!(
            "readiness: {n:>7} records: new replica ready in {fresh:?}; restarted on its state file in {restarted:?}"
        );
    }
}

/// 2,000 records published at once, three times: until every replica refuses the last.
fn burst() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws: Vec<Gateway> = ["deny", "local", "deny"]
        .iter()
        .map(|mode| {
            Gateway::start(
                &up.address(),
                &redis_config(&redis.url(), mode, "200ms", "", None),
                &base_policy(),
                &[],
            )
        })
        .collect();
    for gw in &gws {
        wait_redis_up(gw, 1.0);
    }
    for round in 0..3 {
        let keys: Vec<String> = (0..2000).map(|i| format!("burst-{round}-{i}")).collect();
        let last = key_token("acme", &keys[1999]);
        let published = {
            store_revocations(&redis, "acme", &keys, true);
            Instant::now()
        };
        let mut each = Vec::new();
        for gw in &gws {
            wait_for(DEADLINE, "the last record refused", || {
                (status_with(gw, &last) == 401).then_some(())
            });
            each.push(published.elapsed());
        }
        println!("burst: round {round}: 2,000 records published at once; the last refused by all three replicas {:?} after the script returned ({each:?})", published.elapsed());
    }
}

/// Twenty freezes past `revocations_max_age` under `deny`: 200s with a key revoked meanwhile.
fn freeze() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let max_age = "revocations_max_age = \"1s\"\n";
    let gw = Gateway::start(
        &up.address(),
        &redis_config(&redis.url(), "deny", "100ms", max_age, Some("frozen")),
        &base_policy(),
        &[],
    );
    wait_redis_up(&gw, 1.0);
    let (mut served, mut refused_503, mut requests) = (0usize, 0usize, 0usize);
    for trial in 0..20 {
        let key = format!("freeze-{trial}");
        let tok = key_token("acme", &key);
        wait_for(DEADLINE, "served before the freeze", || {
            (status_with(&gw, &tok) == 200).then_some(())
        });
        gw.freeze();
        let frozen = Instant::now();
        let out = revoke(&gw, "acme", &key, &["--wait", "0s"]);
        assert_eq!(out.code(), Some(3), "{}", out.all());
        let queued: Vec<_> = (0..8)
            .map(|_| {
                let (addr, auth) = (gw.addr, bearer(&tok));
                std::thread::spawn(move || get(addr, PLAIN, &[("Authorization", &auth)]).status)
            })
            .collect();
        wait_for(DEADLINE, "a freeze past max_age", || {
            (frozen.elapsed() >= Duration::from_millis(1500)).then_some(())
        });
        gw.resume();
        let mut seen = Vec::new();
        wait_for(DEADLINE, "refused after the resume", || {
            let s = status_with(&gw, &tok);
            seen.push(s);
            (s == 401).then_some(())
        });
        seen.extend(queued.into_iter().map(|t| t.join().unwrap()));
        requests += seen.len();
        served += seen.iter().filter(|s| **s == 200).count();
        refused_503 += seen.iter().filter(|s| **s == 503).count();
    }
    println!("freeze: 20 trials, {requests} requests with the revoked key after the resume: {served} served 200, {refused_503} answered 503, the rest 401");
}

/// p50 / p99 / max of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99), samples[samples.len() - 1])
}

/// Unrelated requests on a one-worker gateway, alone and while learned-org writes take 0.8 s,
/// in alternating rounds (a shared machine's load drifts; alternating keeps it out of the
/// comparison).
fn learn() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr);
    relay.delay("SADD", Duration::from_millis(800));
    let up = Upstream::start();
    let one = Cfg {
        threads: 1,
        ..Cfg::default()
    };
    let config = redis_config_on(one, &relay.url(), "local", "2s", "", None);
    let gw = Gateway::start(&up.address(), &config, &base_policy(), &[]);
    wait_redis_up(&gw, 1.0);
    let mut conn = Conn::open(gw.addr).unwrap();
    let auth = bearer(&token("globex"));
    let mut sample = |n: usize| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let r = conn.request("GET", PLAIN, &[("Authorization", &auth)], None).unwrap();
                assert_eq!(r.status, 200);
                t.elapsed()
            })
            .collect()
    };
    let (mut alone, mut beside, mut held, mut first) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        alone.extend(sample(500));
        let (addr, create_auth) = (gw.addr, bearer(&token("acme")));
        let create = std::thread::spawn(move || {
            let t = Instant::now();
            let body = Some(&br#"{"name":"x"}"#[..]);
            let r = request(
                addr,
                "POST",
                "/partner/v1/orgs",
                &[("Authorization", &create_auth)],
                body,
            );
            assert_eq!(r.status, 201);
            t.elapsed()
        });
        wait_for(DEADLINE, "a learned-org write held", || {
            (relay.holding() > 0).then_some(())
        });
        let batch = sample(500);
        first.push(batch[0]);
        beside.extend(batch);
        if relay.holding() == 0 {
            // the worker waited for the write: the samples did not all run beside it
            println!("learn: the write was no longer held when the 500 samples were done");
        }
        held.push(create.join().unwrap());
    }
    let (p50, p99, max) = percentiles(alone);
    println!("learn: unrelated GET, no create in flight (5,000): p50 {p50:?} p99 {p99:?} max {max:?}");
    let (p50, p99, max) = percentiles(beside);
    let (c50, _, cmax) = percentiles(held);
    println!(
        "learn: unrelated GET while Redis answers a learned-org write in 0.8 s (5,000): p50 {p50:?} p99 {p99:?} \
         max {max:?}; the 10 create responses were held p50 {c50:?} max {cmax:?}"
    );
    let (f50, _, fmax) = percentiles(first);
    println!("learn: the first unrelated GET after each write began (10): p50 {f50:?} max {fmax:?}");
}
