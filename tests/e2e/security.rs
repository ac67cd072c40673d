//! End-to-end: bearer tokens (every algorithm, every way a token can be wrong), identity
//! headers the upstream gets, client IP allow lists, pipeline order, org ownership and
//! learned orgs, against the real binary.

use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

const BY_EXT: &str = "/partner/v1/orgs/by-external-id/ext-1";

fn scoped(org: &str) -> String {
    format!("/partner/v1/orgs/{org}/users")
}

// ------------------------------------------------------------------------------------
// valid tokens and what the upstream receives
// ------------------------------------------------------------------------------------

#[test]
fn valid_tokens_of_every_algorithm_are_accepted_with_exact_identity_headers() {
    let (up, gw) = base();
    for key in [Key::Hs, Key::Rs1, Key::Es1, Key::Ed1] {
        let tok = sign_cfg(key, &claims("acme"));
        let rid = format!("rid-{:?}", key);
        let r = gw.get_auth(
            scoped(ORG_ACME),
            &tok,
            &[("X-Forwarded-For", "203.0.113.9"), ("X-Request-Id", &rid)],
        );
        assert_eq!(r.status, 200, "{key:?}: {r}");
        assert!(r.proxied());
        let rec = up.last();
        assert_eq!(rec.target, scoped(ORG_ACME));
        assert_eq!(rec.all("x-partner-id"), vec!["acme"], "{key:?}");
        assert_eq!(rec.all("x-api-key-id"), vec!["key-acme"], "{key:?}");
        assert_eq!(rec.all("x-real-ip"), vec!["203.0.113.9"], "{key:?}");
        assert_eq!(rec.all("x-request-id"), vec![rid.as_str()], "{key:?}");
        assert_eq!(rec.all("x-forwarded-for"), vec!["203.0.113.9, 127.0.0.1"], "{key:?}");
        assert!(rec.all("x-org-id").is_empty());
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"), "{key:?}");
    }

    // no X-Forwarded-For: the peer is the client
    let r = gw.get_auth(BY_EXT, &token("acme"), &[]);
    assert_eq!(r.status, 200);
    let rec = up.last();
    assert_eq!(rec.all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(rec.all("x-forwarded-for"), vec!["127.0.0.1"]);

    // several incoming XFF lines are joined, then the peer appended
    let tok = token("acme");
    let auth = bearer(&tok);
    let r = gw.get(
        BY_EXT,
        &[
            ("Authorization", &auth),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    );
    assert_eq!(r.status, 200);
    let rec = up.last();
    assert_eq!(rec.all("x-forwarded-for"), vec!["198.51.100.1, 203.0.113.9, 127.0.0.1"]);
    assert_eq!(rec.all("x-real-ip"), vec!["203.0.113.9"]);

    // a token without jti: no X-Api-Key-Id at all
    let tok = sign_cfg(Key::Hs, &with(claims("acme"), &[("jti", Value::Null)]));
    let r = gw.get_auth(BY_EXT, &tok, &[("X-Api-Key-Id", "forged")]);
    assert_eq!(r.status, 200);
    assert!(up.last().all("x-api-key-id").is_empty());

    // the Bearer grammar: case-insensitive scheme, extra spaces, surrounding whitespace
    let tok = token("acme");
    for value in [
        format!("bearer {tok}"),
        format!("BEARER   {tok}"),
        format!("  Bearer {tok}  "),
    ] {
        let r = gw.get(BY_EXT, &[("Authorization", &value)]);
        assert_eq!(r.status, 200, "{value:?}: {r}");
    }
    // aud as an array containing ours; exp/iat absent (require_exp = false)
    let c = with(
        claims("acme"),
        &[
            ("aud", json!(["other", AUDIENCE])),
            ("exp", Value::Null),
            ("iat", Value::Null),
        ],
    );
    assert_eq!(gw.get_auth(BY_EXT, &sign_cfg(Key::Es1, &c), &[]).status, 200);
}

#[test]
fn client_sent_identity_headers_are_stripped_on_every_route() {
    let (up, gw) = base();
    let forged: [(&str, &str); 8] = [
        ("X-Partner-Id", "evil"),
        ("x-partner-id", "evil2"),
        ("X-Org-Id", "evil-org"),
        ("X-Api-Key-Id", "evil-key"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Authgate-Admin", "1"),
        ("x-authgate-partner", "evil"),
        ("X-AUTHGATE-Verified", "yes"),
    ];
    let tok = token("acme");
    let auth = bearer(&tok);

    // partner route: only the gateway's values
    let mut h: Vec<(&str, &str)> = forged.to_vec();
    h.push(("Authorization", &auth));
    let r = gw.get(scoped(ORG_ACME), &h);
    assert_eq!(r.status, 200, "{r}");
    let rec = up.last();
    assert_eq!(rec.all("x-partner-id"), vec!["acme"]);
    assert_eq!(rec.all("x-api-key-id"), vec!["key-acme"]);
    assert_eq!(rec.all("x-real-ip"), vec!["127.0.0.1"]);
    assert!(rec.all("x-org-id").is_empty(), "{:?}", rec.headers);
    assert!(rec.names_with_prefix("x-authgate-").is_empty(), "{:?}", rec.headers);

    // auth = none routes: none of them at all (but X-Real-IP is the gateway's)
    for target in ["/public/x", "/health"] {
        let r = gw.get(target, &forged);
        assert_eq!(r.status, 200, "{target}: {r}");
        let rec = up.last();
        for name in ["x-partner-id", "x-org-id", "x-api-key-id"] {
            assert!(
                rec.all(name).is_empty(),
                "{target}: {name} forwarded: {:?}",
                rec.headers
            );
        }
        assert_eq!(rec.all("x-real-ip"), vec!["127.0.0.1"], "{target}");
        assert!(
            rec.names_with_prefix("x-authgate-").is_empty(),
            "{target}: {:?}",
            rec.headers
        );
    }

    // an unknown client IP: X-Real-IP absent, the forged one still removed
    let mut h: Vec<(&str, &str)> = forged.to_vec();
    h.push(("X-Forwarded-For", "garbage"));
    let r = gw.get("/public/y", &h);
    assert_eq!(r.status, 200);
    let rec = up.last();
    assert!(rec.all("x-real-ip").is_empty(), "{:?}", rec.headers);
    assert_eq!(rec.all("x-forwarded-for"), vec!["garbage, 127.0.0.1"]);
}

// ------------------------------------------------------------------------------------
// missing and invalid tokens
// ------------------------------------------------------------------------------------

#[test]
fn missing_token_is_401_with_a_bare_bearer_challenge() {
    let (up, gw) = base();
    let tok = token("acme");
    for (what, headers) in [
        ("no header", vec![]),
        ("basic scheme", vec![("Authorization", "Basic YWNtZTpzZWNyZXQ=")]),
        ("token without scheme", vec![("Authorization", tok.as_str())]),
        ("empty header", vec![("Authorization", "")]),
    ] {
        for target in [BY_EXT.to_string(), scoped(ORG_ACME), "/partner/v1/orgs".to_string()] {
            let r = gw.get(&target, &headers);
            let msg = assert_401_bearer(&r, false, &format!("{what} {target}"));
            assert!(!msg.contains(&tok) && !r.text().contains(&tok), "{what}: token echoed");
        }
    }
    assert_eq!(up.count(), 0);
    gw.wait_denied("by-external-id", "missing_token", 4.0);
}

fn forged_tokens() -> Vec<(&'static str, String)> {
    let now = now();
    let hs = |c: &Value| sign_cfg(Key::Hs, c);
    let good = token("acme");
    let parts: Vec<&str> = good.split('.').collect();
    let mut out: Vec<(&'static str, String)> = vec![
        (
            "expired beyond leeway",
            hs(&with(claims("acme"), &[("exp", json!(now - 120))])),
        ),
        (
            "nbf ahead beyond leeway",
            hs(&with(claims("acme"), &[("nbf", json!(now + 300))])),
        ),
        (
            "iat in the future beyond leeway",
            hs(&with(claims("acme"), &[("iat", json!(now + 300))])),
        ),
        (
            "exp as a string",
            hs(&with(claims("acme"), &[("exp", json!((now + 3600).to_string()))])),
        ),
        (
            "wrong iss",
            hs(&with(claims("acme"), &[("iss", json!("https://evil.example"))])),
        ),
        ("missing iss", hs(&with(claims("acme"), &[("iss", Value::Null)]))),
        ("wrong aud", hs(&with(claims("acme"), &[("aud", json!("other-api"))]))),
        (
            "wrong aud list",
            hs(&with(claims("acme"), &[("aud", json!(["a", "b"]))])),
        ),
        ("missing aud", hs(&with(claims("acme"), &[("aud", Value::Null)]))),
        ("sub not a string", hs(&with(claims("acme"), &[("sub", json!(42))]))),
        ("sub missing", hs(&with(claims("acme"), &[("sub", Value::Null)]))),
        (
            "org claim on a partner route",
            hs(&with(claims("acme"), &[("org_id", json!(ORG_ACME))])),
        ),
        ("unknown kid", sign(Key::Hs, Some("no-such-kid"), &claims("acme"))),
        ("no kid with several keys", sign(Key::Hs, None, &claims("acme"))),
        ("RS key under the HS kid", sign(Key::Rs1, Some("hs-1"), &claims("acme"))),
        ("ES key under the RS kid", sign(Key::Es1, Some("rs-1"), &claims("acme"))),
        (
            "RS token signed by a foreign key",
            sign(Key::Rs2, Some("rs-1"), &claims("acme")),
        ),
        (
            "alg none, empty signature",
            raw_jwt(&json!({"alg": "none", "kid": "hs-1"}), &claims("acme"), None),
        ),
        (
            "alg none with a signature",
            format!(
                "{}.{}",
                raw_jwt(&json!({"alg": "none", "kid": "hs-1"}), &claims("acme"), None),
                parts[2]
            ),
        ),
        (
            "alg None spelling",
            raw_jwt(
                &json!({"alg": "None", "kid": "hs-1"}),
                &claims("acme"),
                Some((&Key::Hs.encoding_key(), Algorithm::HS256)),
            ),
        ),
        (
            "HS256 signed with the RSA public PEM",
            raw_jwt(
                &json!({"alg": "HS256", "kid": "rs-1", "typ": "JWT"}),
                &claims("acme"),
                Some((&EncodingKey::from_secret(&Key::Rs1.public_pem()), Algorithm::HS256)),
            ),
        ),
        (
            "HS384 (not allowed)",
            raw_jwt(
                &json!({"alg": "HS384", "kid": "hs-1"}),
                &claims("acme"),
                Some((&Key::Hs.encoding_key(), Algorithm::HS384)),
            ),
        ),
        (
            "crit header",
            raw_jwt(
                &json!({"alg": "HS256", "kid": "hs-1", "crit": ["exp"]}),
                &claims("acme"),
                Some((&Key::Hs.encoding_key(), Algorithm::HS256)),
            ),
        ),
        (
            "jku header to a foreign key",
            raw_jwt(
                &json!({"alg": "RS256", "kid": "attacker", "jku": "http://127.0.0.1:1/jwks.json"}),
                &claims("acme"),
                Some((&Key::Rs2.encoding_key(), Algorithm::RS256)),
            ),
        ),
        (
            "embedded jwk header",
            raw_jwt(
                &json!({"alg": "RS256", "kid": "attacker", "jwk": jwk(Key::Rs2, "attacker", true)}),
                &claims("acme"),
                Some((&Key::Rs2.encoding_key(), Algorithm::RS256)),
            ),
        ),
        ("duplicate claim", {
            let h = b64(json!({"alg": "HS256", "kid": "hs-1"}).to_string().as_bytes());
            let c = claims("globex");
            let body = c.to_string();
            let dup = format!("{{\"sub\":\"acme\",{}", &body[1..]);
            let input = format!("{h}.{}", b64(dup.as_bytes()));
            let sig =
                jsonwebtoken::crypto::sign(input.as_bytes(), &Key::Hs.encoding_key(), Algorithm::HS256).expect("sign");
            format!("{input}.{sig}")
        }),
        ("tampered payload", {
            let other = b64(with(claims("acme"), &[("sub", json!("globex"))]).to_string().as_bytes());
            format!("{}.{}.{}", parts[0], other, parts[2])
        }),
        ("flipped signature", {
            let mut sig = parts[2].as_bytes().to_vec();
            sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
            format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).expect("ascii"))
        }),
        (
            "truncated signature",
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..10]),
        ),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{good}.{}", parts[2])),
        ("not base64", "a$b.c$d.e$f".to_string()),
        ("garbage", "not-a-jwt".to_string()),
        ("oversized token", {
            let c = with(claims("acme"), &[("pad", json!("x".repeat(9000)))]);
            hs(&c)
        }),
    ];
    // the same token twice in one header
    out.push(("two tokens in one header", format!("{good} {good}")));
    out
}

#[test]
fn invalid_tokens_are_401_invalid_token_and_never_echoed() {
    let (up, gw) = base();
    for (what, tok) in forged_tokens() {
        let auth = format!("Bearer {tok}");
        let r = gw.get(BY_EXT, &[("Authorization", &auth)]);
        let msg = assert_401_bearer(&r, true, what);
        let body = r.text();
        assert!(!body.contains(&tok), "{what}: token echoed in {body}");
        if let Some(sig) = tok.split('.').nth(2).filter(|s| s.len() > 8) {
            assert!(!body.contains(sig), "{what}: signature echoed");
        }
        assert!(
            !r.headers.iter().any(|(_, v)| v.contains(&tok)),
            "{what}: token in a header"
        );
        assert!(!msg.contains("e2e-test-only"), "{what}: secret echoed");
    }
    assert_eq!(
        up.count(),
        0,
        "an invalid token reached the upstream: {:?}",
        up.records().first()
    );

    // positive controls at the edges of the leeway
    let now = now();
    for (what, c) in [
        (
            "expired within leeway",
            with(claims("acme"), &[("exp", json!(now - 5))]),
        ),
        ("nbf within leeway", with(claims("acme"), &[("nbf", json!(now + 5))])),
        ("iat slightly ahead", with(claims("acme"), &[("iat", json!(now + 5))])),
    ] {
        let r = gw.get_auth(BY_EXT, &sign_cfg(Key::Hs, &c), &[]);
        assert_eq!(r.status, 200, "{what}: {r}");
    }
}

#[test]
fn two_authorization_headers_are_invalid() {
    let (up, gw) = base();
    let a = bearer(&token("acme"));
    let b = bearer(&token("globex"));
    for headers in [
        vec![("Authorization", a.as_str()), ("Authorization", a.as_str())],
        vec![("Authorization", a.as_str()), ("authorization", b.as_str())],
    ] {
        let r = gw.get(BY_EXT, &headers);
        assert_401_bearer(&r, true, "two Authorization headers");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn unknown_partner_and_revoked_key_are_401() {
    let (up, gw) = base();
    let r = gw.get_auth(BY_EXT, &token("nobody"), &[]);
    assert_401_bearer(&r, true, "unknown partner");
    let r = gw.get_auth(
        BY_EXT,
        &sign_cfg(Key::Rs1, &with(claims("acme"), &[("jti", json!("key-leaked"))])),
        &[],
    );
    assert_401_bearer(&r, true, "revoked key");
    // partner ids are exact
    let r = gw.get_auth(BY_EXT, &token("ACME"), &[]);
    assert_401_bearer(&r, true, "partner id case");
    let r = gw.get_auth(BY_EXT, &token("dormant"), &[]);
    assert_401_bearer(&r, true, "inactive partner");
    assert_eq!(up.count(), 0);
    // another key of the same partner still works
    assert_eq!(gw.get_auth(BY_EXT, &token("acme"), &[]).status, 200);
    gw.wait_denied("by-external-id", "unknown_partner", 2.0);
    gw.wait_denied("by-external-id", "revoked_key", 1.0);
    gw.wait_denied("by-external-id", "inactive_partner", 1.0);
}

// ------------------------------------------------------------------------------------
// client IP and allow lists
// ------------------------------------------------------------------------------------

fn initech_with(gw: &Gateway, xff: &[&str]) -> Response {
    let tok = token("initech");
    let auth = bearer(&tok);
    let mut h = vec![("Authorization", auth.as_str())];
    for line in xff {
        h.push(("X-Forwarded-For", line));
    }
    gw.get("/partner/v1/orgs/org-initech-1/users", &h)
}

#[test]
fn ip_allow_list_uses_the_rightmost_untrusted_forwarded_address() {
    let (up, gw) = base();
    let allowed: &[(&[&str], &str)] = &[
        (&["203.0.113.9"], "203.0.113.9"),
        (&["198.51.100.7"], "198.51.100.7"),
        (&["10.0.0.1, 203.0.113.9"], "203.0.113.9"),
        (&["6.6.6.6, 203.0.113.9, 127.0.0.1"], "203.0.113.9"),
        (&["203.0.113.9,127.0.0.5"], "203.0.113.9"),
        (&["10.1.1.1", "203.0.113.9, 127.0.0.5"], "203.0.113.9"),
        (&["2001:db8::5"], "2001:db8::5"),
        (&["2001:db8:0:ffff::1"], "2001:db8:0:ffff::1"),
        (&["::ffff:203.0.113.9"], "203.0.113.9"),
        (&["  203.0.113.10  "], "203.0.113.10"),
    ];
    for (xff, ip) in allowed {
        let r = initech_with(&gw, xff);
        assert_eq!(r.status, 200, "XFF {xff:?}: {r}");
        let rec = up.last();
        assert_eq!(rec.all("x-real-ip"), vec![*ip], "XFF {xff:?}");
        assert_eq!(rec.all("x-partner-id"), vec!["initech"]);
    }
    let denied: &[&[&str]] = &[
        &[],
        &["198.51.100.8"],
        &["10.0.0.1"],
        &["203.0.113.9, 10.0.0.1"],
        &["203.0.113.9", "10.1.1.1"],
        &["2001:db9::1"],
        &["::ffff:10.0.0.1"],
        &["127.0.0.9"],
        &["not-an-ip"],
        &["203.0.113.9:8080"],
        &["[2001:db8::5]"],
        &["2001:db8::5%eth0"],
        &["unknown"],
        &["203.0.113.9, garbage"],
        &["203.0.113.256"],
    ];
    let n = up.count();
    for xff in denied {
        let r = initech_with(&gw, xff);
        let msg = assert_error(&r, 403, &format!("XFF {xff:?}"));
        assert!(!msg.contains("203.0.113"), "the message does not echo addresses: {msg}");
    }
    assert_eq!(up.count(), n, "a denied request reached the upstream");
    gw.wait_metric("authgate_denied_total", &[("reason", "ip_denied")], denied.len() as f64);
    // every entry trusted: the leftmost is the client
    let r = gw.get_auth(BY_EXT, &token("acme"), &[("X-Forwarded-For", "127.0.0.2, 127.0.0.3")]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().all("x-real-ip"), vec!["127.0.0.2"]);
    // partners without a list are not affected by an unparseable client IP
    let r = gw.get_auth(BY_EXT, &token("acme"), &[("X-Forwarded-For", "garbage")]);
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn forwarded_addresses_are_ignored_from_an_untrusted_peer() {
    let config = Cfg {
        trusted_proxies: "[]".into(),
        ..Cfg::default()
    }
    .render();
    let (up, gw) = base_with(&config);
    let r = initech_with(&gw, &["203.0.113.9"]);
    assert_error(&r, 403, "untrusted peer, XFF ignored");
    let r = gw.get_auth(BY_EXT, &token("acme"), &[("X-Forwarded-For", "203.0.113.9")]);
    assert_eq!(r.status, 200);
    let rec = up.last();
    assert_eq!(rec.all("x-real-ip"), vec!["127.0.0.1"], "the peer is the client");
    assert_eq!(rec.all("x-forwarded-for"), vec!["203.0.113.9, 127.0.0.1"]);
}

#[test]
fn pipeline_order_token_then_partner_then_ip_then_active() {
    let (up, gw) = base();
    let good_ip = [("X-Forwarded-For", "203.0.113.9")];
    let bad_ip = [("X-Forwarded-For", "10.0.0.1")];
    // inactive + bad IP -> 403 (IP before active)
    let r = gw.get_auth(BY_EXT, &token("dormant-ip"), &bad_ip);
    assert_error(&r, 403, "inactive + bad IP");
    // inactive + good IP -> 401
    let r = gw.get_auth(BY_EXT, &token("dormant-ip"), &good_ip);
    assert_401_bearer(&r, true, "inactive + good IP");
    // revoked + bad IP -> 401 (key before IP)
    let c = with(claims("initech"), &[("jti", json!("key-leaked"))]);
    let policy = base_policy().replace(
        "orgs = [\"org-initech-1\"]",
        "orgs = [\"org-initech-1\"]\nrevoked_keys = [\"key-leaked\"]",
    );
    gw.write_policy(&policy);
    gw.reload();
    let r = gw.get_auth(BY_EXT, &sign_cfg(Key::Hs, &c), &bad_ip);
    assert_401_bearer(&r, true, "revoked + bad IP");
    // bad token + bad IP -> 401; no token -> 401 even for a bad path? no: path first
    let r = gw.get_auth(BY_EXT, "x.y.z", &bad_ip);
    assert_401_bearer(&r, true, "bad token + bad IP");
    // IP denied before org ownership
    let r = gw.get_auth(scoped(ORG_GLOBEX), &token("initech"), &bad_ip);
    assert_error(&r, 403, "bad IP + foreign org");
    assert_eq!(up.count(), 0);
    // bad path before everything, unknown route before auth
    let r = gw.get_auth("/partner/v1/orgs/../orgs", "x.y.z", &[]);
    assert_error(&r, 400, "bad path + bad token");
    let r = gw.get_auth("/partner/v9", "x.y.z", &[]);
    assert_error(&r, 404, "no route + bad token");
}

// ------------------------------------------------------------------------------------
// org ownership
// ------------------------------------------------------------------------------------

fn pct_all(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

#[test]
fn org_ownership() {
    let (up, gw) = base();
    let acme = token("acme");
    // own orgs pass, on org-scoped and login-links
    for org in [ORG_ACME, ORG_ACME_UUID] {
        let r = gw.get_auth(scoped(org), &acme, &[]);
        assert_eq!(r.status, 200, "{org}: {r}");
        let r = gw.req(
            "POST",
            format!("/partner/v1/orgs/{org}/login-links"),
            &[("Authorization", &bearer(&acme))],
            Some(b"{}"),
        );
        assert_eq!(r.status, 200, "login-links {org}: {r}");
    }
    let n = up.count();
    // foreign, unknown, case-changed orgs are 403
    for org in [ORG_GLOBEX, "org-unknown", "ORG-ACME-1", "org-acme-1x", "%6Frg-globex-1"] {
        let r = gw.get_auth(scoped(org), &acme, &[]);
        let msg = assert_error(&r, 403, org);
        assert!(msg.to_lowercase().contains("org"), "{msg}");
        let r = gw.req(
            "POST",
            format!("/partner/v1/orgs/{org}/login-links"),
            &[("Authorization", &bearer(&acme))],
            Some(b"{}"),
        );
        assert_error(&r, 403, &format!("login-links {org}"));
    }
    assert_eq!(up.count(), n, "a foreign-org request reached the upstream");
    gw.wait_denied("org-scoped", "org_forbidden", 5.0);

    // percent-encoded own org passes; the upstream sees the original, undecoded path
    for target in [
        format!("/partner/v1/orgs/{}/users", pct_all(ORG_ACME, true)),
        format!("/partner/v1/orgs/{}/users", pct_all(ORG_ACME_UUID, false)),
        "/partner/v1/orgs/org%2Dacme%2d1/users?limit=5".to_string(),
        format!("/partner/v1/orgs/{ORG_ACME}"),
        format!("/partner/v1/orgs/{ORG_ACME}/"),
        format!("/partner/v1/orgs/{ORG_ACME}/a/b/c"),
    ] {
        let r = gw.get_auth(&target, &acme, &[]);
        assert_eq!(r.status, 200, "{target}: {r}");
        assert_eq!(up.last().target, target, "forwarded undecoded");
    }
    // by-external-id is not org-scoped
    let r = gw.get_auth("/partner/v1/orgs/by-external-id/anything", &acme, &[]);
    assert_eq!(r.status, 200);
    // the other partner is confined the same way
    let globex = token("globex");
    assert_eq!(gw.get_auth(scoped(ORG_GLOBEX), &globex, &[]).status, 200);
    assert_error(
        &gw.get_auth(scoped(ORG_ACME), &globex, &[]),
        403,
        "globex on acme's org",
    );
}

// ------------------------------------------------------------------------------------
// learned orgs
// ------------------------------------------------------------------------------------

#[test]
fn learned_orgs_are_journaled_before_the_response_and_survive_a_restart() {
    let (up, mut gw) = base();
    let acme = token("acme");
    let globex = token("globex");
    let journal = gw.conf.join("partners.toml.orgs.jsonl");
    let auth = bearer(&acme);

    // a non-2xx create response learns nothing
    up.set("POST /partner/v1/orgs", Reply::json(409, json!({"id": "org-conflict"})));
    let r = gw.req(
        "POST",
        "/partner/v1/orgs",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(b"{\"name\":\"x\"}"),
    );
    assert_eq!(r.status, 409);
    assert_error(
        &gw.get_auth(scoped("org-conflict"), &acme, &[]),
        403,
        "409 learned nothing",
    );
    // a 2xx without a string at the pointer learns nothing and still passes
    up.set("POST /partner/v1/orgs", Reply::json(201, json!({"id": 12345})));
    let r = gw.req("POST", "/partner/v1/orgs", &[("Authorization", &auth)], Some(b"{}"));
    assert_eq!(r.status, 201);
    assert_eq!(r.json(), json!({"id": 12345}));
    assert_error(
        &gw.get_auth(scoped("12345"), &acme, &[]),
        403,
        "numeric id learned nothing",
    );
    // a GET to the create route never learns
    up.set("GET /partner/v1/orgs", Reply::json(200, json!({"id": "org-from-get"})));
    assert_eq!(gw.get_auth("/partner/v1/orgs", &acme, &[]).status, 200);
    assert_error(
        &gw.get_auth(scoped("org-from-get"), &acme, &[]),
        403,
        "GET learned nothing",
    );
    up.clear("POST /partner/v1/orgs");

    // a real create
    let r = gw.req(
        "POST",
        "/partner/v1/orgs",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(b"{\"name\":\"New Org\"}"),
    );
    assert_eq!(r.status, 201, "{r}");
    let body = r.json();
    assert_eq!(body["name"], "New Org", "the body passes through unchanged");
    let id = body["id"].as_str().expect("id").to_string();
    // already on disk when the client has the response
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    assert!(text.contains(&id), "journal {} lacks {id}: {text:?}", journal.display());
    assert!(!text.contains("org-conflict") && !text.contains("12345") && !text.contains("org-from-get"));

    // the creator owns it, another partner does not
    assert_eq!(gw.get_auth(scoped(&id), &acme, &[]).status, 200);
    let r = gw.req(
        "POST",
        format!("/partner/v1/orgs/{id}/login-links"),
        &[("Authorization", &auth)],
        Some(b"{}"),
    );
    assert_eq!(r.status, 200);
    assert_error(
        &gw.get_auth(scoped(&id), &globex, &[]),
        403,
        "globex on acme's learned org",
    );

    // a restart (same files, new ports) keeps it
    let old_addr = gw.addr;
    gw.restart();
    assert_ne!(gw.addr, old_addr);
    let r = gw.get_auth(scoped(&id), &acme, &[]);
    assert_eq!(r.status, 200, "learned org lost across restart: {r}");
    assert_error(&gw.get_auth(scoped(&id), &globex, &[]), 403, "globex after restart");
    // and a reload keeps it too
    gw.reload();
    assert_eq!(
        gw.get_auth(scoped(&id), &acme, &[]).status,
        200,
        "learned org lost across reload"
    );
}

#[test]
fn a_torn_journal_line_is_skipped_at_start() {
    let up = Upstream::start();
    let journal = format!(
        "{}\n{}\n{{\"partner\":\"acme\",\"org\":\"org-to",
        json!({"partner": "acme", "org": "org-learned-a"}),
        json!({"partner": "globex", "org": "org-learned-g"}),
    );
    let gw = Gateway::start(
        &up.address(),
        &base_config(),
        &base_policy(),
        &[("partners.toml.orgs.jsonl", journal.as_bytes())],
    );
    let acme = token("acme");
    let globex = token("globex");
    assert_eq!(gw.get_auth(scoped("org-learned-a"), &acme, &[]).status, 200);
    assert_eq!(gw.get_auth(scoped("org-learned-g"), &globex, &[]).status, 200);
    assert_error(
        &gw.get_auth(scoped("org-learned-g"), &acme, &[]),
        403,
        "foreign learned org",
    );
    assert_error(&gw.get_auth(scoped("org-to"), &acme, &[]), 403, "torn line");
    // learning still works after the torn tail
    let r = gw.req(
        "POST",
        "/partner/v1/orgs",
        &[("Authorization", &bearer(&acme))],
        Some(b"{}"),
    );
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().expect("id").to_string();
    assert_eq!(gw.get_auth(scoped(&id), &acme, &[]).status, 200);
}

#[test]
fn a_failed_journal_append_still_passes_the_response() {
    let config = base_config().replace(
        "file = \"partners.toml\"\n",
        "file = \"partners.toml\"\nlearned_orgs_file = \"no-such-dir/learned.jsonl\"\n",
    );
    let (_up, gw) = base_with(&config);
    let acme = token("acme");
    let r = gw.req(
        "POST",
        "/partner/v1/orgs",
        &[("Authorization", &bearer(&acme))],
        Some(b"{\"name\":\"n\"}"),
    );
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json()["name"], "n");
    assert!(r.json()["id"].is_string());
    // counted somewhere in the metrics
    gw.wait_metric_where("a journal failure counter", |m| {
        m.samples
            .iter()
            .any(|s| s.name.contains("journal") && s.name.contains("fail") && s.value >= 1.0)
    });
    gw.wait_requests("orgs", "POST", "201", 1.0);
}

#[test]
fn learned_orgs_file_names_the_journal() {
    let up = Upstream::start();
    let config = base_config().replace(
        "file = \"partners.toml\"\n",
        "file = \"partners.toml\"\nlearned_orgs_file = \"state/learned.jsonl\"\n",
    );
    let mut gw = Gateway::start(&up.address(), &config, &base_policy(), &[("state/.keep", b"")]);
    let acme = token("acme");
    let r = gw.req(
        "POST",
        "/partner/v1/orgs",
        &[("Authorization", &bearer(&acme))],
        Some(b"{}"),
    );
    assert_eq!(r.status, 201, "{r}");
    let id = r.json()["id"].as_str().expect("id").to_string();
    let text = std::fs::read_to_string(gw.conf.join("state/learned.jsonl")).unwrap_or_default();
    assert!(
        text.contains(&id),
        "state/learned.jsonl (relative to the config dir) lacks {id}: {text:?}"
    );
    assert!(
        !gw.conf.join("partners.toml.orgs.jsonl").exists(),
        "the default journal was used anyway"
    );
    gw.restart();
    assert_eq!(gw.get_auth(scoped(&id), &acme, &[]).status, 200);
}

#[test]
fn jku_x5u_and_jwk_headers_are_never_followed() {
    let (up, gw) = base();
    let attacker = Upstream::start();
    let set = jwks(&[jwk(Key::Rs2, "attacker", true)]);
    attacker.set("/jwks.json", Reply::raw(200, &set, "application/json"));
    let url = format!("http://{}/jwks.json", attacker.address());
    let rs2 = Key::Rs2.encoding_key();
    for header in [
        json!({"alg": "RS256", "kid": "attacker", "jku": url}),
        json!({"alg": "RS256", "kid": "attacker", "x5u": url}),
        json!({"alg": "RS256", "jku": url}),
        json!({"alg": "RS256", "kid": "attacker", "jwk": jwk(Key::Rs2, "attacker", true)}),
        json!({"alg": "RS256", "kid": "rs-1", "jku": url}),
    ] {
        let tok = raw_jwt(&header, &claims("acme"), Some((&rs2, Algorithm::RS256)));
        assert_401_bearer(&gw.get_auth(BY_EXT, &tok, &[]), true, &header.to_string());
    }
    assert_eq!(attacker.count(), 0, "the gateway fetched a URL named by a token header");
    assert_eq!(up.count(), 0);
}

#[test]
fn client_ip_sources_cf_connecting_ip_and_peer() {
    let cf = base_config().replace("source = \"x-forwarded-for\"", "source = \"cf-connecting-ip\"");
    let (up, gw) = base_with(&cf);
    let tok = token("initech");
    let auth = bearer(&tok);
    let t = "/partner/v1/orgs/org-initech-1/users";
    let r = gw.get(
        t,
        &[
            ("Authorization", &auth),
            ("CF-Connecting-IP", "203.0.113.7"),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    );
    assert_eq!(r.status, 200, "CF-Connecting-IP from a trusted peer: {r}");
    assert_eq!(up.last().all("x-real-ip"), vec!["203.0.113.7"]);
    let r = gw.get(t, &[("Authorization", &auth), ("X-Forwarded-For", "203.0.113.7")]);
    assert_error(&r, 403, "XFF ignored with source = cf-connecting-ip");
    let r = gw.get(t, &[("Authorization", &auth), ("CF-Connecting-IP", "garbage")]);
    assert_error(&r, 403, "unparseable CF-Connecting-IP");
    drop(gw);

    let peer = base_config().replace("source = \"x-forwarded-for\"", "source = \"peer\"");
    let gw = Gateway::start(&up.address(), &peer, &base_policy(), &[]);
    let r = gw.get(
        t,
        &[
            ("Authorization", &auth),
            ("X-Forwarded-For", "203.0.113.7"),
            ("CF-Connecting-IP", "203.0.113.7"),
        ],
    );
    assert_error(&r, 403, "source = peer");
    assert_eq!(
        gw.get_auth(BY_EXT, &token("acme"), &[("X-Forwarded-For", "203.0.113.7")])
            .status,
        200
    );
    assert_eq!(up.last().all("x-real-ip"), vec!["127.0.0.1"]);
}

#[test]
fn require_exp_and_custom_claim_names() {
    let config = base_config()
        .replace("require_exp = false", "require_exp = true")
        .replace("partner_claim = \"sub\"", "partner_claim = \"pid\"")
        .replace("key_id_claim = \"jti\"", "key_id_claim = \"key\"");
    let (up, gw) = base_with(&config);
    let c = json!({"pid": "acme", "key": "k-9", "sub": "globex", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600});
    let r = gw.get_auth(BY_EXT, &sign_cfg(Key::Hs, &c), &[]);
    assert_eq!(r.status, 200, "{r}");
    let rec = up.last();
    assert_eq!(rec.all("x-partner-id"), vec!["acme"]);
    assert_eq!(rec.all("x-api-key-id"), vec!["k-9"]);
    let no_exp = with(c.clone(), &[("exp", Value::Null)]);
    assert_401_bearer(
        &gw.get_auth(BY_EXT, &sign_cfg(Key::Hs, &no_exp), &[]),
        true,
        "no exp with require_exp",
    );
    let sub_only = json!({"sub": "acme", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600});
    assert_401_bearer(
        &gw.get_auth(BY_EXT, &sign_cfg(Key::Hs, &sub_only), &[]),
        true,
        "sub is not the partner claim",
    );
    let revoked = with(c, &[("key", json!("key-leaked"))]);
    assert_401_bearer(
        &gw.get_auth(BY_EXT, &sign_cfg(Key::Hs, &revoked), &[]),
        true,
        "revocation by key_id_claim",
    );
}
