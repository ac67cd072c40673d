//! End-to-end: the bypasses the round-2 audit found, each proven closed against the real
//! binary — headers named in `Connection`, underscore spellings, client-IP and method
//! override headers, path parameters, route case, JWKS URL shadowing.

use crate::common::*;
use serde_json::json;

const ORG: &str = "cf2701f8-fc4d-4002-8d52-92dd0d1e82a7";
const API_KEY: &str = "org_hardening_key_aaaaaaaaaaaa";

/// The base config plus an org route and an api_key route, so every auth kind is covered.
fn all_kinds(trusted_proxies: &str, server_extra: &str) -> String {
    Cfg {
        server_extra: server_extra.into(),
        trusted_proxies: trusted_proxies.into(),
        routes_extra: r#"
[[routes]]
name = "org-info"
path = "/org"
auth = "org"

[[routes]]
name = "key-info"
path = "/v1/org/info"
auth = "api_key"
api_key_prefix = "org_"
"#
        .into(),
        ..Cfg::default()
    }
    .render()
}

fn all_kinds_policy() -> String {
    format!(
        "{}\n[[api_key]]\nid = \"ak-h\"\norg = \"{ORG}\"\nsha256 = \"{}\"\n",
        base_policy(),
        sha256_hex(API_KEY.as_bytes())
    )
}

/// One request of an auth kind: (label, path, credential headers).
type KindRequest = (&'static str, String, Vec<(String, String)>);

/// One request per auth kind.
fn per_kind() -> Vec<KindRequest> {
    let partner = bearer(&token("acme"));
    let org = bearer(&sign_cfg(Key::Hs, &org_claims(ORG)));
    vec![
        (
            "partner",
            format!("/partner/v1/orgs/{ORG_ACME}/users"),
            vec![("Authorization".into(), partner)],
        ),
        ("org", "/org".into(), vec![("Authorization".into(), org)]),
        (
            "api_key",
            "/v1/org/info".into(),
            vec![("X-API-Key".into(), API_KEY.into())],
        ),
        ("none", "/public/x".into(), vec![]),
    ]
}

fn send(gw: &Gateway, path: &str, cred: &[(String, String)], extra: &[(&str, &str)]) -> Response {
    let mut h: Vec<(&str, &str)> = cred.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    h.extend_from_slice(extra);
    gw.get(path, &h)
}

/// A gateway on [`all_kinds`] and [`all_kinds_policy`] in front of `up`.
fn start_all_kinds(up: &Upstream, trusted_proxies: &str, server_extra: &str) -> Gateway {
    Gateway::start(
        &up.address(),
        &all_kinds(trusted_proxies, server_extra),
        &all_kinds_policy(),
        &[],
    )
}

/// One request per auth kind with the `extra` headers; each must pass. Returns what the
/// upstream received for each kind.
fn each_kind(gw: &Gateway, up: &Upstream, extra: &[(&str, &str)]) -> Vec<(&'static str, Recorded)> {
    per_kind()
        .into_iter()
        .map(|(kind, path, cred)| {
            let r = send(gw, &path, &cred, extra);
            assert_eq!(r.status, 200, "{kind}: {r}");
            (kind, up.last())
        })
        .collect()
}

#[test]
fn headers_named_in_connection_cannot_remove_the_gateways_own() {
    let up = Upstream::start();
    let gw = start_all_kinds(&up, r#"["127.0.0.0/8"]"#, "");
    let conn = "close, X-Partner-Id, X-Org-Id, X-Real-IP, X-Request-Id, X-Api-Key-Id";
    let extra = [
        ("Connection", conn),
        ("X-Request-Id", "rid-conn-1"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    for (kind, rec) in each_kind(&gw, &up, &extra) {
        assert_eq!(rec.all("x-request-id"), vec!["rid-conn-1"], "{kind}");
        assert_eq!(rec.all("x-real-ip"), vec!["203.0.113.9"], "{kind}");
        match kind {
            "partner" => {
                assert_eq!(rec.all("x-partner-id"), vec!["acme"]);
                assert_eq!(rec.all("x-api-key-id"), vec!["key-acme"]);
            }
            "org" => {
                assert_eq!(rec.all("x-org-id"), vec![ORG]);
                assert_eq!(rec.all("x-api-key-id"), vec![format!("okey-{ORG}").as_str()]);
            }
            "api_key" => {
                assert_eq!(rec.all("x-org-id"), vec![ORG]);
                assert_eq!(rec.all("x-api-key-id"), vec!["ak-h"]);
            }
            _ => assert!(rec.all("x-partner-id").is_empty() && rec.all("x-org-id").is_empty()),
        }
    }
}

#[test]
fn underscore_spellings_never_reach_the_upstream() {
    let up = Upstream::start();
    let gw = start_all_kinds(&up, r#"["127.0.0.0/8"]"#, "");
    let forged: [(&str, &str); 12] = [
        ("X_Partner_Id", "evil"),
        ("X-Partner_Id", "evil"),
        ("x_org_id", "evil"),
        ("X_Api_Key_Id", "evil"),
        ("x_real_ip", "6.6.6.6"),
        ("X_Request_Id", "evil"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X_Authgate_Admin", "1"),
        ("X_HTTP_Method_Override", "DELETE"),
        ("CF_Connecting_IP", "6.6.6.6"),
        ("True_Client_IP", "6.6.6.6"),
        ("X_Custom_Thing", "other underscore header"),
    ];
    for (kind, rec) in each_kind(&gw, &up, &forged) {
        let underscored = rec.names_with_prefix("");
        let left: Vec<&&str> = underscored.iter().filter(|n| n.contains('_')).collect();
        assert!(
            left.is_empty(),
            "{kind}: underscore headers reached the upstream: {left:?}"
        );
        assert_eq!(rec.all("x-real-ip"), vec!["127.0.0.1"], "{kind}");
        assert_eq!(rec.all("x-forwarded-for"), vec!["127.0.0.1"], "{kind}");
    }

    // "allow" passes other underscore names, never the spellings of the gateway's own
    let gw = start_all_kinds(&up, r#"["127.0.0.0/8"]"#, "underscore_headers = \"allow\"\n");
    let (_, path, cred) = &per_kind()[0];
    assert_eq!(send(&gw, path, cred, &forged).status, 200);
    let rec = up.last();
    let left: Vec<&str> = rec
        .names_with_prefix("")
        .into_iter()
        .filter(|n| n.contains('_'))
        .collect();
    assert_eq!(left, vec!["x_custom_thing"]);
    assert_eq!(rec.all("x-partner-id"), vec!["acme"]);

    // check refuses a value that is neither
    let config = all_kinds("[]", "underscore_headers = \"keep\"\n");
    let out = ConfDir::new("underscore", &config, &all_kinds_policy(), &[]).check();
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.stdout.contains("underscore_headers"), "{}", out.all());
}

const CLIENT_IP_CLAIMS: [(&str, &str); 5] = [
    ("CF-Connecting-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
    ("Forwarded", "for=6.6.6.6"),
];

#[test]
fn client_ip_claims_pass_only_from_trusted_proxies_and_method_overrides_never() {
    let up = Upstream::start();
    let overrides = [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
    ];
    let mut sent: Vec<(&str, &str)> = CLIENT_IP_CLAIMS.to_vec();
    sent.extend_from_slice(&overrides);

    // the test client (127.0.0.1) is not a trusted proxy here
    let untrusted = start_all_kinds(&up, r#"["10.0.0.0/8"]"#, "");
    for (kind, rec) in each_kind(&untrusted, &up, &sent) {
        for (name, _) in CLIENT_IP_CLAIMS.iter().chain(overrides.iter()) {
            assert!(rec.all(name).is_empty(), "{kind}: {name} reached the upstream");
        }
    }

    // from a trusted proxy the client-IP claims pass; the overrides still do not
    let trusted = start_all_kinds(&up, r#"["127.0.0.0/8"]"#, "");
    for (kind, rec) in each_kind(&trusted, &up, &sent) {
        for (name, value) in CLIENT_IP_CLAIMS {
            assert_eq!(rec.all(name), vec![value], "{kind}: {name}");
        }
        for (name, _) in overrides {
            assert!(rec.all(name).is_empty(), "{kind}: {name} reached the upstream");
        }
    }
}

#[test]
fn dot_segments_before_path_parameters_and_bad_utf8_are_refused() {
    let (up, gw) = base();
    let tok = token("acme");
    for path in [
        format!("/partner/v1/orgs/{ORG_ACME}/..;/{ORG_GLOBEX}/api-keys"),
        format!("/partner/v1/orgs/{ORG_ACME}/.;x/{ORG_GLOBEX}/api-keys"),
        format!("/partner/v1/orgs/{ORG_ACME}/%2e%2e;p/{ORG_GLOBEX}/api-keys"),
        format!("/partner/v1/orgs/{ORG_ACME}/%2E.;jsessionid=1/x"),
        format!("/partner/v1/orgs/{ORG_ACME}/%c0%ae%c0%ae/{ORG_GLOBEX}"),
        format!("/partner/v1/orgs/{ORG_ACME}/%ff"),
        "/public/..;/partner/v1/orgs".to_string(),
    ] {
        let before = up.count();
        let r = gw.get_auth(&path, &tok, &[]);
        assert_error(&r, 400, &path);
        assert_eq!(up.count(), before, "{path} reached the upstream");
    }
    // counted in pingora's logging phase, which may still run after the response arrived
    gw.wait_denied("none", "bad_path", 7.0);
    // path parameters are refused unless allow_path_semicolons (tests/e2e/differentials.rs);
    // other escapes stay allowed, and are forwarded as sent
    let path = format!("/partner/v1/orgs/{ORG_ACME}/users;v=1");
    assert_error(&gw.get_auth(&path, &tok, &[]), 400, &path);
    let path = format!("/partner/v1/orgs/{ORG_ACME}/caf%C3%A9");
    let r = gw.get_auth(&path, &tok, &[]);
    assert_eq!(r.status, 200, "{path}: {r}");
    assert_eq!(up.last().target, path);
}

#[test]
fn literal_segments_match_case_insensitively_so_login_links_keep_their_limit() {
    let (up, gw) = base();
    let tok = token("acme");
    let auth = bearer(&tok);
    let upper = format!("/PARTNER/V1/ORGS/{ORG_ACME}/LOGIN-LINKS");
    let mut statuses = Vec::new();
    for i in 0..31 {
        let path = if i % 2 == 0 {
            upper.clone()
        } else {
            format!("/partner/v1/orgs/{ORG_ACME}/Login-Links")
        };
        let r = gw.req("POST", &path, &[("Authorization", &auth)], Some(b"{}"));
        if r.status == 200 {
            assert_eq!(r.header("x-ratelimit-limit"), Some("30"), "{path}: {r}");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 30, "{statuses:?}");
    assert_eq!(statuses[30], 429, "{statuses:?}");
    assert_eq!(up.last().target, format!("/partner/v1/orgs/{ORG_ACME}/Login-Links"));
    // counted in the request's logging phase, after the response is out: wait, then check
    // it is exactly one (fault: a scrape that overtakes the count)
    let limited = gw.wait_metric(
        "authgate_requests_total",
        &[("route", "login-links"), ("status", "429")],
        1.0,
    );
    assert_eq!(limited, 1.0);
    // captures keep their case: an org id is not case-folded into someone else's
    let r = gw.get_auth(format!("/partner/v1/orgs/{}/users", ORG_ACME.to_uppercase()), &tok, &[]);
    assert_error(&r, 403, "upper-cased org id");
    // methods stay case-sensitive: a lower-case one is refused (400 bad_method)
    let r = gw.req(
        "post",
        format!("/partner/v1/orgs/{ORG_ACME}/login-links"),
        &[("Authorization", &auth)],
        Some(b"{}"),
    );
    assert_error(&r, 400, "post");
}

#[test]
fn a_jwks_url_key_never_replaces_a_pinned_key() {
    // the URL serves a key under the pinned HS kid "rs-1" — an attacker who controls the
    // URL would like its own RSA key to verify tokens for kid rs-1
    let evil = jwks(&[jwk(Key::Rs2, "rs-1", true), jwk(Key::Rs2, "url-rs", true)]);
    let keyset = Upstream::start();
    keyset.set("/jwks.json", Reply::raw(200, &evil, "application/json"));
    let cfg = Cfg {
        jwks: format!(
            "[jwt.jwks]\nurl = \"http://{}/jwks.json\"\nrefresh = \"1h\"\n",
            keyset.address()
        ),
        ..Cfg::default()
    }
    .render();
    let (_up, gw) = base_with(&cfg);
    gw.wait_metric("authgate_jwks_fetches_total", &[("result", "success")], 1.0);
    assert!(gw.metrics().sum("authgate_jwks_keys_ignored_total", &[]) >= 1.0);
    let forged = sign(Key::Rs2, Some("rs-1"), &claims("acme"));
    assert_eq!(
        gw.get_auth(format!("/partner/v1/orgs/{ORG_ACME}/x"), &forged, &[])
            .status,
        401
    );
    let pinned = sign(Key::Rs1, Some("rs-1"), &claims("acme"));
    assert_eq!(
        gw.get_auth(format!("/partner/v1/orgs/{ORG_ACME}/x"), &pinned, &[])
            .status,
        200
    );
    // a key under a new kid from the URL still works
    let fetched = sign(Key::Rs2, Some("url-rs"), &claims("acme"));
    assert_eq!(
        gw.get_auth(format!("/partner/v1/orgs/{ORG_ACME}/x"), &fetched, &[])
            .status,
        200
    );
    assert!(gw.log_text().contains("pinned"), "the ignored key is logged");
}

#[test]
fn a_jwks_url_must_be_https_or_loopback() {
    for (url, ok) in [
        ("http://issuer.example/jwks.json", false),
        ("http://192.0.2.1/jwks.json", false),
        ("https://issuer.example/jwks.json", true),
        ("http://127.0.0.1:9/jwks.json", true),
        ("http://localhost:9/jwks.json", true),
    ] {
        let config = Cfg {
            jwks: format!("[jwt.jwks]\nurl = \"{url}\"\n"),
            ..Cfg::default()
        }
        .render();
        let out = ConfDir::base_policy("jwks-url", &config).check();
        if ok {
            assert_eq!(out.code(), Some(0), "{url}: {}", out.all());
        } else {
            assert_eq!(out.code(), Some(1), "{url}: {}", out.all());
            assert!(out.stdout.contains("jwt.jwks.url"), "{url}: {}", out.all());
        }
    }
}

#[test]
fn a_partner_and_an_org_with_the_same_id_have_separate_buckets() {
    let cfg = Cfg {
        limits_extra: "\n[[limits]]\nname = \"shared\"\nper_minute = 3\n".into(),
        routes_extra: r#"
[[routes]]
name = "p-tiny"
path = "/p/tiny"
auth = "partner"
limits = ["shared"]

[[routes]]
name = "o-tiny"
path = "/o/tiny"
auth = "org"
limits = ["shared"]
"#
        .into(),
        ..Cfg::default()
    }
    .render();
    let (_up, gw) = base_with(&cfg);
    let partner = token("acme");
    let org = sign_cfg(Key::Hs, &with(org_claims("acme"), &[("jti", json!("k-o"))]));
    for _ in 0..3 {
        assert_eq!(gw.get_auth("/p/tiny", &partner, &[]).status, 200);
    }
    assert_eq!(gw.get_auth("/p/tiny", &partner, &[]).status, 429);
    // org "acme" has its own, full bucket
    for _ in 0..3 {
        assert_eq!(gw.get_auth("/o/tiny", &org, &[]).status, 200);
    }
    assert_eq!(gw.get_auth("/o/tiny", &org, &[]).status, 429);
}
