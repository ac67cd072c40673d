//! End-to-end: JWKS keys from a file (next to `[[jwt.keys]]`, reloaded on SIGHUP) and from
//! a URL (refreshed, stale-while-error, unknown-kid refetch, readiness), against the real
//! binary.

use std::time::{Duration, Instant};

use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

const TARGET: &str = "/partner/v1/orgs/by-external-id/ext-1";

fn file_jwks_config() -> String {
    Cfg {
        jwks: "[jwt.jwks]\nfile = \"keys/jwks.json\"\n".into(),
        ..Cfg::default()
    }
    .render()
}

fn first_set() -> Vec<u8> {
    jwks(&[
        jwk(Key::Rs2, "jw-rs", true),
        jwk(Key::Es2, "jw-es", true),
        jwk(Key::Ed2, "jw-ed", false),
    ])
}

#[test]
fn jwks_file_keys_are_accepted_next_to_configured_keys() {
    let up = Upstream::start();
    let set = first_set();
    let gw = Gateway::start(
        &up.address(),
        &file_jwks_config(),
        &base_policy(),
        &[("keys/jwks.json", &set)],
    );
    let c = claims("acme");
    for (what, tok) in [
        ("jwks RS256", sign(Key::Rs2, Some("jw-rs"), &c)),
        ("jwks ES256", sign(Key::Es2, Some("jw-es"), &c)),
        ("jwks EdDSA (no alg in the JWK)", sign(Key::Ed2, Some("jw-ed"), &c)),
        ("configured HS256", sign_cfg(Key::Hs, &c)),
        ("configured RS256", sign_cfg(Key::Rs1, &c)),
    ] {
        let r = gw.get_auth(TARGET, &tok, &[]);
        assert_eq!(r.status, 200, "{what}: {r}");
        assert_eq!(up.last().one("x-partner-id"), Some("acme"));
    }
    let rs2 = Key::Rs2.encoding_key();
    let es2 = Key::Es2.encoding_key();
    for (what, tok) in [
        (
            "RS256 under the EC kid",
            raw_jwt(
                &json!({"alg": "RS256", "kid": "jw-es"}),
                &c,
                Some((&rs2, Algorithm::RS256)),
            ),
        ),
        (
            "ES256 under the RSA kid",
            raw_jwt(
                &json!({"alg": "ES256", "kid": "jw-rs"}),
                &c,
                Some((&es2, Algorithm::ES256)),
            ),
        ),
        ("EdDSA under the RSA kid", sign(Key::Ed2, Some("jw-rs"), &c)),
        (
            "PS256 (not allowed) with the RSA key",
            raw_jwt(
                &json!({"alg": "PS256", "kid": "jw-rs"}),
                &c,
                Some((&rs2, Algorithm::PS256)),
            ),
        ),
        (
            "HS256 keyed with the JWKS RSA public key",
            raw_jwt(
                &json!({"alg": "HS256", "kid": "jw-rs"}),
                &c,
                Some((&EncodingKey::from_secret(&Key::Rs2.public_pem()), Algorithm::HS256)),
            ),
        ),
        ("foreign RSA key under the JWKS kid", sign(Key::Rs3, Some("jw-rs"), &c)),
        ("JWKS key under a configured kid", sign(Key::Rs2, Some("rs-1"), &c)),
    ] {
        assert_401_bearer(&gw.get_auth(TARGET, &tok, &[]), true, what);
    }
}

#[test]
fn jwks_file_rotation_on_sighup() {
    let up = Upstream::start();
    let set = first_set();
    let gw = Gateway::start(
        &up.address(),
        &file_jwks_config(),
        &base_policy(),
        &[("keys/jwks.json", &set)],
    );
    let c = claims("acme");
    let old = sign(Key::Rs2, Some("jw-rs"), &c);
    let next = sign(Key::Rs3, Some("jw-rs-next"), &c);
    let es = sign(Key::Es2, Some("jw-es"), &c);
    assert_eq!(gw.get_auth(TARGET, &old, &[]).status, 200);
    assert_401_bearer(&gw.get_auth(TARGET, &next, &[]), true, "new kid before rotation");

    gw.write(
        "keys/jwks.json",
        &jwks(&[jwk(Key::Rs3, "jw-rs-next", true), jwk(Key::Es2, "jw-es", true)]),
    );
    gw.reload();
    assert_401_bearer(&gw.get_auth(TARGET, &old, &[]), true, "removed kid after rotation");
    assert_eq!(gw.get_auth(TARGET, &next, &[]).status, 200, "new kid after rotation");
    assert_eq!(gw.get_auth(TARGET, &es, &[]).status, 200, "kept kid after rotation");
    assert_eq!(
        gw.get_auth(TARGET, &token("acme"), &[]).status,
        200,
        "configured keys unaffected"
    );

    // a broken JWKS file fails the reload and keeps the set in force
    gw.write("keys/jwks.json", b"{not json");
    gw.reload_expect("failure");
    assert_eq!(
        gw.get_auth(TARGET, &next, &[]).status,
        200,
        "keys kept after a failed reload"
    );
}

/// The JWKS "server": a recording upstream whose `/jwks.json` answer the test swaps.
fn jwks_server(set: &[u8]) -> Upstream {
    let s = Upstream::start();
    s.set("/jwks.json", Reply::raw(200, set, "application/json"));
    s
}

fn url_config(jwks_addr: &str, refresh: &str) -> String {
    Cfg {
        keys: String::new(),
        jwks: format!("[jwt.jwks]\nurl = \"http://{jwks_addr}/jwks.json\"\nrefresh = \"{refresh}\"\n"),
        ..Cfg::default()
    }
    .render()
}

fn fetches(s: &Upstream) -> usize {
    s.for_path("/jwks.json").len()
}

#[test]
fn jwks_url_is_refreshed_and_keeps_the_last_good_set_on_errors() {
    let keyset = jwks_server(&jwks(&[jwk(Key::Rs2, "jw-a", true)]));
    let (_up, gw) = base_with(&url_config(&keyset.address(), "1s"));
    let c = claims("acme");
    let a = sign(Key::Rs2, Some("jw-a"), &c);
    let b = sign(Key::Ed2, Some("jw-b"), &c);
    assert_eq!(gw.get_auth(TARGET, &a, &[]).status, 200, "kid A from the URL");
    assert_401_bearer(&gw.get_auth(TARGET, &b, &[]), true, "kid B before it is served");
    assert!(fetches(&keyset) >= 1);

    keyset.set(
        "/jwks.json",
        Reply::raw(200, &jwks(&[jwk(Key::Ed2, "jw-b", false)]), "application/json"),
    );
    wait_for(
        Duration::from_secs(30),
        "kid B to be accepted after the served set changed",
        || (gw.get_auth(TARGET, &b, &[]).status == 200).then_some(()),
    );
    assert_401_bearer(
        &gw.get_auth(TARGET, &a, &[]),
        true,
        "kid A after it left the served set",
    );

    // errors keep the last good set (stale-while-error)
    for (what, reply) in [
        ("HTTP 500", Reply::raw(500, b"oops", "text/plain")),
        ("not a JWKS", Reply::raw(200, b"{\"nope\": 1}", "application/json")),
        ("not JSON", Reply::raw(200, b"<html>", "text/html")),
    ] {
        let seen = fetches(&keyset);
        keyset.set("/jwks.json", reply);
        wait_for(
            Duration::from_secs(30),
            &format!("two refetches answered with {what}"),
            || (fetches(&keyset) >= seen + 2).then_some(()),
        );
        assert_eq!(gw.get_auth(TARGET, &b, &[]).status, 200, "kid B lost after {what}");
        assert_401_bearer(&gw.get_auth(TARGET, &a, &[]), true, &format!("kid A after {what}"));
    }
    // the JWKS is fetched with a plain GET and no credentials
    let rec = keyset.for_path("/jwks.json").pop().expect("a fetch");
    assert_eq!(rec.method, "GET");
    assert!(rec.all("authorization").is_empty());
}

#[test]
fn jwks_url_unknown_kid_triggers_a_limited_refetch() {
    let keyset = jwks_server(&jwks(&[jwk(Key::Rs2, "jw-a", true)]));
    // refresh far away: only an unknown kid can make the gateway fetch again
    let (_up, gw) = base_with(&url_config(&keyset.address(), "1h"));
    let c = claims("acme");
    assert_eq!(gw.get_auth(TARGET, &sign(Key::Rs2, Some("jw-a"), &c), &[]).status, 200);
    let b = sign(Key::Es2, Some("jw-b"), &c);
    keyset.set(
        "/jwks.json",
        Reply::raw(
            200,
            &jwks(&[jwk(Key::Rs2, "jw-a", true), jwk(Key::Es2, "jw-b", true)]),
            "application/json",
        ),
    );
    wait_for(
        Duration::from_secs(30),
        "an unknown kid to trigger a refetch that brings kid B",
        || (gw.get_auth(TARGET, &b, &[]).status == 200).then_some(()),
    );

    // a burst of unknown kids: at most one refetch per 10 s
    let start = Instant::now();
    let before = fetches(&keyset);
    let z = sign(Key::Es2, Some("jw-zzz"), &c);
    for _ in 0..30 {
        assert_401_bearer(&gw.get_auth(TARGET, &z, &[]), true, "unknown kid");
    }
    let allowed = 1 + (start.elapsed().as_secs_f64() / 10.0).ceil() as usize;
    let extra = fetches(&keyset) - before;
    assert!(
        extra <= allowed,
        "{extra} JWKS fetches for 30 unknown-kid requests (at most {allowed} allowed)"
    );
}

#[test]
fn an_unreachable_jwks_url_without_other_keys_is_not_ready() {
    let up = Upstream::start();
    let gw = Gateway::start_with(
        &up.address(),
        &url_config(&closed_addr(), "1s"),
        &base_policy(),
        &[],
        StartOpts { wait_ready: false },
    );
    assert_eq!(get(gw.admin, "/healthz", &[]).status, 200);
    // the one bounded wait: readiness must stay 503 for a while (~2 s)
    let until = Instant::now() + Duration::from_secs(2);
    let mut polls = 0;
    while Instant::now() < until {
        let r = get(gw.admin, "/readyz", &[]);
        assert_eq!(r.status, 503, "ready without any verification key: {r}");
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(polls >= 5);
    assert_eq!(get(gw.admin, "/readyz", &[]).status, 503);
    // requests that need a key are refused, auth = none still works
    let r = gw.get_auth(TARGET, &sign(Key::Rs2, Some("jw-a"), &claims("acme")), &[]);
    assert_401_bearer(&r, true, "no keys");
    assert_eq!(gw.get("/health", &[]).status, 200);
}
