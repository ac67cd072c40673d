//! End-to-end: the org-level APIs of docs/reference.md#org-level-apis — `auth = "org"` (org JWTs) and
//! `auth = "api_key"` (static prefixed keys stored as digests, the seed's exact messages),
//! against the real binary.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

const ORG: &str = "cf2701f8-fc4d-4002-8d52-92dd0d1e82a7";
const KEY_OK: &str = "org_live_e2e_key_aaaaaaaaaaaaaaaa";
const KEY_OFF: &str = "org_live_e2e_key_disabled_bbbbbbbb";
const KEY_OTHER_ORG: &str = "org_live_e2e_key_other_cccccccccc";
const KEY_INACTIVE_ORG: &str = "org_live_e2e_key_inactive_dddddddd";

fn org_config(extra_jwt: &str) -> String {
    Cfg {
        jwt_extra: extra_jwt.into(),
        limits_extra: r#"
[[limits]]
name = "org-standard"
per_minute = 100

[[limits]]
name = "org-tiny"
per_minute = 3
"#
        .into(),
        routes_extra: r#"
[[routes]]
name = "org-info"
path = "/org"
method = "GET"
auth = "org"
limits = ["org-standard"]

[[routes]]
name = "org-api"
path = "/v1/orgs/{org_id}/**"
auth = "org"
org_param = "org_id"
limits = ["org-standard"]

[[routes]]
name = "org-key-info"
path = "/v1/org/info"
method = "GET"
auth = "api_key"
api_key_prefix = "org_"
error_format = "simple"

[[routes]]
name = "org-key-info-v2"
path = "/v2/org/info"
auth = "api_key"
api_key_header = "X-Org-Key"
api_key_prefix = "org_"

[[routes]]
name = "org-tiny-jwt"
path = "/tiny/jwt"
auth = "org"
limits = ["org-tiny"]

[[routes]]
name = "org-tiny-key"
path = "/tiny/key"
auth = "api_key"
api_key_prefix = "org_"
limits = ["org-tiny"]
"#
        .into(),
        ..Cfg::default()
    }
    .render()
}

fn org_policy() -> String {
    format!(
        r#"{base}
[[org]]
id = "{ORG}"
revoked_keys = ["okey-old"]
active = true

[[org]]
id = "org-off"
active = false

[[org]]
id = "org-ip"
ip_allow_list = ["203.0.113.0/24"]

[[api_key]]
id = "ak-1"
org = "{ORG}"
sha256 = "{ok}"

[[api_key]]
id = "ak-off"
org = "{ORG}"
sha256 = "{off}"
disabled = true

[[api_key]]
id = "ak-other"
org = "org-other"
sha256 = "{other}"

[[api_key]]
id = "ak-inactive"
org = "org-off"
sha256 = "{inactive}"
"#,
        base = base_policy(),
        ok = sha256_hex(KEY_OK.as_bytes()),
        off = sha256_hex(KEY_OFF.as_bytes()),
        other = sha256_hex(KEY_OTHER_ORG.as_bytes()),
        inactive = sha256_hex(KEY_INACTIVE_ORG.as_bytes()),
    )
}

fn start(extra_jwt: &str) -> (Upstream, Gateway) {
    let up = Upstream::start();
    let gw = Gateway::start(&up.address(), &org_config(extra_jwt), &org_policy(), &[]);
    (up, gw)
}

fn org_token(org: &str) -> String {
    sign_cfg(Key::Hs, &org_claims(org))
}

// ------------------------------------------------------------------------------------
// auth = "org"
// ------------------------------------------------------------------------------------

#[test]
fn org_tokens_on_org_routes() {
    let (up, gw) = start("");
    for key in [Key::Hs, Key::Rs1, Key::Es1, Key::Ed1] {
        let r = gw.get_auth(
            "/org",
            &sign_cfg(key, &org_claims(ORG)),
            &[("X-Org-Id", "forged"), ("X-Partner-Id", "forged")],
        );
        assert_eq!(r.status, 200, "{key:?}: {r}");
        let rec = up.last();
        assert_eq!(rec.all("x-org-id"), vec![ORG]);
        assert_eq!(rec.all("x-api-key-id"), vec![format!("okey-{ORG}").as_str()]);
        assert!(rec.all("x-partner-id").is_empty(), "{:?}", rec.headers);
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    }
    // the org claim decides, a partner claim next to it is ignored
    let both = sign_cfg(Key::Hs, &with(org_claims(ORG), &[("sub", json!("acme"))]));
    assert_eq!(gw.get_auth("/org", &both, &[]).status, 200);
    assert_eq!(up.last().all("x-org-id"), vec![ORG]);
    assert!(up.last().all("x-partner-id").is_empty());
    // an org the policy does not list is accepted (org_must_be_listed = false)
    assert_eq!(gw.get_auth("/org", &org_token("org-unlisted"), &[]).status, 200);
    assert_eq!(up.last().all("x-org-id"), vec!["org-unlisted"]);

    let n = up.count();
    // revoked org key
    let revoked = sign_cfg(Key::Hs, &with(org_claims(ORG), &[("jti", json!("okey-old"))]));
    assert_401_bearer(&gw.get_auth("/org", &revoked, &[]), true, "revoked org key");
    // a partner token is not an org token
    assert_401_bearer(
        &gw.get_auth("/org", &token("acme"), &[]),
        true,
        "partner token on an org route",
    );
    // org claim not a string
    let bad = sign_cfg(Key::Hs, &with(org_claims(ORG), &[("org_id", json!(7))]));
    assert_401_bearer(&gw.get_auth("/org", &bad, &[]), true, "numeric org claim");
    // inactive org
    assert_401_bearer(&gw.get_auth("/org", &org_token("org-off"), &[]), true, "inactive org");
    // missing token
    assert_401_bearer(&gw.get("/org", &[]), false, "no token");
    // expired org key
    let expired = sign_cfg(Key::Hs, &with(org_claims(ORG), &[("exp", json!(now() - 600))]));
    assert_401_bearer(&gw.get_auth("/org", &expired, &[]), true, "expired org key");
    // IP allow list of an org
    assert_error(
        &gw.get_auth("/org", &org_token("org-ip"), &[("X-Forwarded-For", "10.0.0.1")]),
        403,
        "org IP",
    );
    assert_eq!(up.count(), n, "refused org requests reached the upstream");
    assert_eq!(
        gw.get_auth("/org", &org_token("org-ip"), &[("X-Forwarded-For", "203.0.113.4")])
            .status,
        200
    );
    // method is part of the route
    assert_error(
        &gw.req(
            "POST",
            "/org",
            &[("Authorization", &bearer(&org_token(ORG)))],
            Some(b"{}"),
        ),
        404,
        "POST /org",
    );
}

#[test]
fn org_param_must_equal_the_token_org() {
    let (up, gw) = start("");
    let tok = org_token(ORG);
    let r = gw.get_auth(format!("/v1/orgs/{ORG}/conversations"), &tok, &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().all("x-org-id"), vec![ORG]);
    let encoded = format!("/v1/orgs/{}/conversations?x=1", ORG.replace('-', "%2D"));
    let r = gw.get_auth(&encoded, &tok, &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().target, encoded, "forwarded undecoded");
    let n = up.count();
    for other in ["org-other", "CF2701F8-FC4D-4002-8D52-92DD0D1E82A7", "org-off"] {
        let r = gw.get_auth(format!("/v1/orgs/{other}/conversations"), &tok, &[]);
        let msg = assert_error(&r, 403, other);
        assert!(!msg.is_empty());
    }
    assert_eq!(up.count(), n);
    gw.wait_denied("org-api", "org_forbidden", 3.0);
}

#[test]
fn org_must_be_listed_refuses_unlisted_orgs() {
    let (_up, gw) = start("org_must_be_listed = true\n");
    assert_eq!(gw.get_auth("/org", &org_token(ORG), &[]).status, 200);
    assert_401_bearer(
        &gw.get_auth("/org", &org_token("org-unlisted"), &[]),
        true,
        "unlisted org",
    );
    gw.wait_denied("org-info", "unknown_partner", 1.0);
    // an api key of an unlisted org, too
    let r = gw.get("/v1/org/info", &[("X-API-Key", KEY_OTHER_ORG)]);
    assert_eq!(r.status, 401, "{r}");
}

#[test]
fn authgate_token_mints_org_tokens() {
    let (up, gw) = start("");
    let cfg = gw.config_path().to_string_lossy().into_owned();
    let out = run_cli(
        &gw.dir.path.join("run"),
        &[
            "token", "--config", &cfg, "--org", ORG, "--key-id", "okey-cli", "--kid", "ed-1",
        ],
        None,
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), Some(0), "{}", out.all());
    let tok = out.stdout.trim();
    let r = gw.get_auth("/org", tok, &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(up.last().all("x-api-key-id"), vec!["okey-cli"]);
}

// ------------------------------------------------------------------------------------
// auth = "api_key"
// ------------------------------------------------------------------------------------

fn assert_simple(r: &Response, status: u16, message: &str, header: &str) {
    assert_eq!(r.status, status, "{message}: {r}");
    assert!(!r.proxied());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{r}"
    );
    assert_eq!(r.json(), json!({ "error": message }), "{r}");
    assert!(valid_request_id(r.request_id()));
    if status == 401 {
        assert_eq!(
            r.all("www-authenticate"),
            vec![format!("ApiKey header=\"{header}\"").as_str()],
            "{r}"
        );
    }
}

#[test]
fn api_key_route_with_the_seed_messages() {
    let (up, gw) = start("");
    let p = "/v1/org/info";
    // absent
    assert_simple(&gw.get(p, &[]), 401, "Missing X-API-Key header", "X-API-Key");
    let tok = org_token(ORG);
    assert_simple(&gw.get_auth(p, &tok, &[]), 401, "Missing X-API-Key header", "X-API-Key");
    assert_simple(
        &gw.get(p, &[("X-Org-Key", KEY_OK)]),
        401,
        "Missing X-API-Key header",
        "X-API-Key",
    );
    // bad format
    let too_long = format!("org_{}", "a".repeat(129));
    let bad_char = format!("org_{}!", "a".repeat(20));
    for key in [
        "org_short",
        "xyz_aaaaaaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "ORG_aaaaaaaaaaaaaaaaaaaa",
        too_long.as_str(),
        bad_char.as_str(),
        "org_aaaaaaa aaaaaaaaaaaa",
        "org_aaaaaaaaaaaaaaa",
        "",
    ] {
        let r = gw.get(p, &[("X-API-Key", key)]);
        assert_simple(&r, 401, "Invalid API key format", "X-API-Key");
        if key.len() > 6 {
            assert!(!r.text().contains(key), "key echoed");
        }
    }
    // boundaries of the format: 16 and 128 characters after the prefix are well formed
    for key in [format!("org_{}", "a".repeat(16)), format!("org_{}", "Z_-9".repeat(32))] {
        assert_simple(&gw.get(p, &[("X-API-Key", &key)]), 401, "Invalid API key", "X-API-Key");
    }
    // unknown digest
    assert_simple(
        &gw.get(p, &[("X-API-Key", "org_unknown_key_eeeeeeeeeeee")]),
        401,
        "Invalid API key",
        "X-API-Key",
    );
    // disabled
    assert_simple(
        &gw.get(p, &[("X-API-Key", KEY_OFF)]),
        403,
        "API key is disabled",
        "X-API-Key",
    );
    assert_eq!(up.count(), 0, "a refused key reached the upstream");

    // valid: forwarded with the org and key id, forged identity headers removed
    let r = gw.get(
        p,
        &[
            ("x-api-key", KEY_OK),
            ("X-Org-Id", "forged"),
            ("X-Api-Key-Id", "forged"),
        ],
    );
    assert_eq!(r.status, 200, "{r}");
    assert!(r.proxied());
    let rec = up.last();
    assert_eq!(rec.all("x-org-id"), vec![ORG]);
    assert_eq!(rec.all("x-api-key-id"), vec!["ak-1"]);
    assert!(rec.all("x-partner-id").is_empty());
    // an api key's org that is inactive
    let r = gw.get(p, &[("X-API-Key", KEY_INACTIVE_ORG)]);
    assert_eq!(r.status, 401, "{r}");
    let v = r.json();
    assert!(
        v.as_object().is_some_and(|o| o.len() == 1) && v["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{r}"
    );
    assert_eq!(r.all("www-authenticate"), vec!["ApiKey header=\"X-API-Key\""]);
    // route method
    let r = gw.req("POST", p, &[("X-API-Key", KEY_OK)], Some(b"{}"));
    assert_error(&r, 404, "POST on a GET api_key route");

    gw.wait_denied("org-key-info", "missing_token", 3.0);
    gw.wait_denied("org-key-info", "invalid_token", 10.0);
    gw.wait_denied("org-key-info", "key_disabled", 1.0);
    let m = gw.metrics();
    assert!(
        !m.text.contains(KEY_OK) && !m.text.contains(ORG),
        "keys or org ids in metric labels"
    );
}

#[test]
fn api_key_route_with_a_custom_header_and_the_default_error_shape() {
    let (up, gw) = start("");
    let p = "/v2/org/info";
    let www = |r: &Response| {
        r.all("www-authenticate")
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let r = gw.get(p, &[("X-API-Key", KEY_OK)]);
    let msg = assert_error(&r, 401, "missing X-Org-Key");
    assert_eq!(msg, "Missing X-Org-Key header");
    assert_eq!(www(&r), vec!["ApiKey header=\"X-Org-Key\"".to_string()]);
    let r = gw.get(p, &[("X-Org-Key", "org_short")]);
    assert_eq!(assert_error(&r, 401, "bad format"), "Invalid API key format");
    assert_eq!(www(&r), vec!["ApiKey header=\"X-Org-Key\"".to_string()]);
    let r = gw.get(p, &[("X-Org-Key", "org_unknown_key_eeeeeeeeeeee")]);
    assert_eq!(assert_error(&r, 401, "unknown"), "Invalid API key");
    let r = gw.get(p, &[("X-Org-Key", KEY_OFF)]);
    assert_eq!(assert_error(&r, 403, "disabled"), "API key is disabled");
    assert!(r.header("www-authenticate").is_none());
    // two key headers are not one key
    let r = gw.get(p, &[("X-Org-Key", KEY_OK), ("X-Org-Key", KEY_OK)]);
    assert_error(&r, 401, "two key headers");
    assert_eq!(up.count(), 0);

    for method in ["GET", "POST", "DELETE"] {
        let r = gw.req(method, p, &[("x-org-key", KEY_OK)], Some(b""));
        assert_eq!(r.status, 200, "{method}: {r}");
        let rec = up.last();
        assert_eq!(rec.method, method);
        assert_eq!(rec.all("x-org-id"), vec![ORG]);
        assert_eq!(rec.all("x-api-key-id"), vec!["ak-1"]);
    }
}

#[test]
fn org_limits_are_per_org_and_shared_by_org_tokens_and_api_keys() {
    let (_up, gw) = start("");
    let tok = org_token(ORG);
    assert_eq!(gw.get_auth("/tiny/jwt", &tok, &[]).status, 200);
    assert_eq!(gw.get_auth("/tiny/jwt", &tok, &[]).status, 200);
    let r = gw.get("/tiny/key", &[("X-API-Key", KEY_OK)]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    // the org's bucket (per_minute = 3) is empty now, whichever credential is used
    let r = gw.get_auth("/tiny/jwt", &tok, &[]);
    let r2 = gw.get("/tiny/key", &[("X-API-Key", KEY_OK)]);
    for (what, r) in [("org token", &r), ("api key", &r2)] {
        assert_error(r, 429, what);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"), "{what}");
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{what}");
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("whole seconds");
        assert!(retry >= 1);
    }
    // another org is independent
    assert_eq!(gw.get_auth("/tiny/jwt", &org_token("org-unlisted"), &[]).status, 200);
    // org principals have an empty partner label
    gw.wait_metric(
        "authgate_rate_limited_total",
        &[("limit", "org-tiny"), ("partner", "")],
        2.0,
    );
    let m = gw.metrics();
    let labels: Vec<Value> = m
        .matching("authgate_rate_limited_total", &[("limit", "org-tiny")])
        .map(|s| json!(s.labels))
        .collect();
    assert!(
        labels.iter().all(|l| !l.to_string().contains(ORG)),
        "org id in labels: {labels:?}"
    );
}
