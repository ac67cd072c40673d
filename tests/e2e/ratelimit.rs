//! End-to-end: named rate limits (GCRA, burst = per_minute), per-partner overrides,
//! the 429 answer, and bucket state across reloads, against the real binary.
//!
//! Refill makes exact counts depend on elapsed time, so every bound here is
//! `burst <= passes <= burst + floor(elapsed / interval)`, with `elapsed` measured
//! generously (from before the first request to after the last answer).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use crate::common::*;

/// A partner route with the `partner` limit only.
const BY_EXT: &str = "/partner/v1/orgs/by-external-id/x";

/// Asserts the 429 of docs/reference.md#responses and returns Retry-After.
fn assert_429(r: &Response, limit: u32, context: &str) -> u64 {
    assert_error(r, 429, context);
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{context}: no Retry-After: {r}"))
        .parse()
        .unwrap_or_else(|_| panic!("{context}: Retry-After is not whole seconds: {r}"));
    assert!((1..=60).contains(&retry), "{context}: Retry-After {retry}");
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some(limit.to_string().as_str()),
        "{context}: {r}"
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{context}: {r}");
    retry
}

fn remaining(r: &Response) -> u64 {
    r.header("x-ratelimit-remaining")
        .unwrap_or_else(|| panic!("no X-RateLimit-Remaining on a passed response: {r}"))
        .parse()
        .expect("X-RateLimit-Remaining is a number")
}

/// Refill allowance: whole intervals in `elapsed`.
fn refill(start: Instant, interval_secs: f64) -> usize {
    (start.elapsed().as_secs_f64() / interval_secs).floor() as usize
}

#[test]
fn partner_limit_holds_under_concurrency() {
    let (up, gw) = base();
    let tok = Arc::new(token("acme"));
    let n = 150;
    let barrier = Arc::new(Barrier::new(n));
    let addr = gw.addr;
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let tok = tok.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let auth = bearer(&tok);
                barrier.wait();
                request(
                    addr,
                    "GET",
                    format!("/partner/v1/orgs/by-external-id/rl-{i}"),
                    &[("Authorization", &auth)],
                    None,
                )
            })
        })
        .collect();
    let responses: Vec<Response> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
    let allowance = refill(start, 0.6);

    let passed: Vec<&Response> = responses.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<&Response> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        passed.len() + limited.len(),
        n,
        "only 200 and 429 expected: {:?}",
        responses
            .iter()
            .filter(|r| r.status != 200 && r.status != 429)
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        passed.len() >= 100,
        "burst of 100 not honoured: {} passed",
        passed.len()
    );
    assert!(
        passed.len() <= 100 + allowance,
        "{} passed, at most {} allowed",
        passed.len(),
        100 + allowance
    );
    for r in &passed {
        assert!(r.proxied());
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"), "{r}");
        assert!(remaining(r) < 100);
    }
    for r in &limited {
        assert_429(r, 100, "partner limit");
    }
    // the upstream saw exactly the passed ones
    let forwarded = up
        .records()
        .iter()
        .filter(|r| r.path().starts_with("/partner/v1/orgs/by-external-id/rl-"))
        .count();
    assert_eq!(forwarded, passed.len());
    gw.wait_metric(
        "authgate_rate_limited_total",
        &[("limit", "partner"), ("partner", "acme")],
        limited.len() as f64,
    );
    let m = gw.metrics();
    assert_eq!(
        m.sum(
            "authgate_rate_limited_total",
            &[("limit", "partner"), ("partner", "acme")]
        ),
        limited.len() as f64
    );
    // another partner is unaffected
    let r = gw.get_auth(BY_EXT, &token("globex"), &[]);
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn login_links_limit_is_separate_and_charges_the_partner_limit_first() {
    let (up, gw) = base();
    let acme = token("acme");
    let auth = bearer(&acme);
    let target = format!("/partner/v1/orgs/{ORG_ACME}/login-links");
    let start = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = gw.req("POST", &target, &[("Authorization", &auth)], Some(b"{}"));
        if i < 30 {
            assert_eq!(r.status, 200, "request #{i}: {r}");
        }
        match r.status {
            200 => {
                let limit = r.header("x-ratelimit-limit").expect("X-RateLimit-Limit");
                assert!(limit == "30" || limit == "100", "X-RateLimit-Limit {limit}");
            }
            429 => {
                assert_429(&r, 30, "login-links");
            }
            other => panic!("unexpected {other}: {r}"),
        }
        statuses.push(r.status);
    }
    let passes = statuses.iter().filter(|s| **s == 200).count();
    assert!(passes <= 30 + refill(start, 2.0), "{passes} login links passed");
    assert_eq!(up.for_path(&target).len(), passes);

    // other endpoints still pass: the partner limit had 40 taken, not 100
    let r = gw.get_auth(format!("/partner/v1/orgs/{ORG_ACME}/users"), &acme, &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    let left = remaining(&r) as usize;
    assert!(
        left <= 60 + refill(start, 0.6),
        "partner limit not charged by login-links requests: {left} left"
    );
    assert!(left >= 50, "{left} left");
    // another partner's login links are independent
    let r = gw.req(
        "POST",
        format!("/partner/v1/orgs/{ORG_GLOBEX}/login-links"),
        &[("Authorization", &bearer(&token("globex")))],
        Some(b"{}"),
    );
    assert_eq!(r.status, 200, "{r}");
    gw.wait_metric(
        "authgate_rate_limited_total",
        &[("limit", "login-links"), ("partner", "acme")],
        (40 - passes) as f64,
    );
}

#[test]
fn per_partner_override_and_independent_partners() {
    let (up, gw) = base();
    let small = token("small");
    let start = Instant::now();
    let mut passes = 0;
    for i in 0..8 {
        let r = gw.get_auth(BY_EXT, &small, &[]);
        if i < 5 {
            assert_eq!(r.status, 200, "#{i}: {r}");
        }
        if r.status == 200 {
            passes += 1;
            assert_eq!(r.header("x-ratelimit-limit"), Some("5"), "{r}");
        } else {
            assert_429(&r, 5, "override 5/min");
        }
    }
    assert!(passes <= 5 + refill(start, 12.0));
    // the bucket is shared by every route naming the limit
    let r = gw.get_auth("/partner/v1/orgs/org-small-1/users", &small, &[]);
    if passes == 5 {
        assert_429(&r, 5, "shared partner bucket");
    }
    // a denied request takes nothing from later limits: login-links is denied by `partner`
    let r = gw.req(
        "POST",
        "/partner/v1/orgs/org-small-1/login-links",
        &[("Authorization", &bearer(&small))],
        Some(b"{}"),
    );
    if passes == 5 {
        assert_429(&r, 5, "denied by the first limit");
    }
    // partners are independent
    let small2 = token("small2");
    for i in 0..5 {
        let r = gw.get_auth(BY_EXT, &small2, &[]);
        assert_eq!(r.status, 200, "small2 #{i}: {r}");
    }
    for i in 0..10 {
        assert_eq!(gw.get_auth(BY_EXT, &token("acme"), &[]).status, 200, "acme #{i}");
    }
    assert_eq!(
        up.records()
            .iter()
            .filter(|r| r.one("x-partner-id") == Some("small"))
            .count(),
        passes
    );
}

#[test]
fn bucket_state_survives_a_reload_unless_the_override_changed() {
    let (_up, gw) = base();
    let small = token("small");
    let start = Instant::now();
    let passes = (0..6)
        .filter(|_| gw.get_auth(BY_EXT, &small, &[]).status == 200)
        .count();
    assert!(passes >= 5);
    // reload with the same policy: still limited (unless time refilled a token)
    gw.reload();
    let r = gw.get_auth(BY_EXT, &small, &[]);
    if refill(start, 12.0) == 0 {
        assert_429(&r, 5, "bucket kept across a reload");
    }
    // change small's override: that bucket starts full
    let policy = base_policy();
    let changed = policy.replace(
        "id = \"small\"\norgs = [\"org-small-1\"]\nlimits = { partner = 5 }",
        "id = \"small\"\norgs = [\"org-small-1\"]\nlimits = { partner = 7 }",
    );
    assert_ne!(policy, changed);
    gw.write_policy(&changed);
    gw.reload();
    for i in 0..7 {
        let r = gw.get_auth(BY_EXT, &small, &[]);
        assert_eq!(r.status, 200, "#{i} after the override changed: {r}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("7"));
    }
    let r = gw.get_auth(BY_EXT, &small, &[]);
    let after_change = Instant::now();
    if after_change.duration_since(start).as_secs_f64() < 8.0 {
        assert_429(&r, 7, "new override enforced");
    }
}
