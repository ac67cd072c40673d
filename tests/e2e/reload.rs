//! End-to-end: SIGHUP reloads (policy and key files, failures keep the old policy),
//! requests in flight across reloads and under load, and graceful SIGTERM/SIGINT,
//! against the real binary.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn scoped(org: &str) -> String {
    format!("/partner/v1/orgs/{org}/users")
}

fn tok_jti(partner: &str, jti: &str) -> String {
    sign_cfg(Key::Hs, &with(claims(partner), &[("jti", json!(jti))]))
}

#[test]
fn sighup_applies_a_new_policy_and_an_invalid_one_keeps_the_previous() {
    let (_up, gw) = base();
    let key_a = tok_jti("acme", "key-a");
    let key_b = tok_jti("acme", "key-b");
    assert_eq!(gw.get_auth(scoped(ORG_ACME), &key_a, &[]).status, 200);
    assert_error(
        &gw.get_auth(scoped("org-new"), &key_b, &[]),
        403,
        "org-new before the reload",
    );
    assert_401_bearer(
        &gw.get_auth(scoped("org-newco"), &token("newco"), &[]),
        true,
        "newco before",
    );
    assert_eq!(gw.get_auth(scoped(ORG_GLOBEX), &token("globex"), &[]).status, 200);
    assert_eq!(gw.metrics().sum("authgate_partners", &[]), 8.0);

    let v2 = base_policy()
        .replace(
            "revoked_keys = [\"key-leaked\"]",
            "revoked_keys = [\"key-leaked\", \"key-a\"]",
        )
        .replace(
            &format!("orgs = [\"{ORG_ACME}\", \"{ORG_ACME_UUID}\"]"),
            &format!("orgs = [\"{ORG_ACME}\", \"{ORG_ACME_UUID}\", \"org-new\"]"),
        )
        .replace(
            &format!("[[partner]]\nid = \"globex\"\norgs = [\"{ORG_GLOBEX}\"]\n"),
            "",
        )
        + "\n[[partner]]\nid = \"newco\"\norgs = [\"org-newco\"]\n\n[[partner]]\nid = \"newco2\"\n";
    assert!(
        v2.contains("key-a") && v2.contains("org-new") && !v2.contains("\"globex\""),
        "{v2}"
    );
    // v2 in force: key-a revoked, org-new added to acme, newco added, globex removed
    let v2_in_force = |what: &str| {
        assert_401_bearer(
            &gw.get_auth(scoped(ORG_ACME), &key_a, &[]),
            true,
            &format!("{what}: key-a revoked"),
        );
        assert_eq!(
            gw.get_auth(scoped("org-new"), &key_b, &[]).status,
            200,
            "{what}: org-new added"
        );
        assert_eq!(
            gw.get_auth(scoped("org-newco"), &token("newco"), &[]).status,
            200,
            "{what}: partner newco added"
        );
        assert_401_bearer(
            &gw.get_auth(scoped(ORG_GLOBEX), &token("globex"), &[]),
            true,
            &format!("{what}: partner globex removed"),
        );
        assert_eq!(gw.metrics().sum("authgate_partners", &[]), 9.0, "{what}");
    };
    gw.write_policy(&v2);
    gw.reload();
    v2_in_force("after the reload");

    // invalid policies: counted as failures, v2 stays in force
    let failures0 = gw.reloads("failure");
    for (i, bad) in [
        v2.replace("\"198.51.100.7\"]", "\"198.51.100.7\", \"203.0.113.0/33\"]"),
        v2.replace("id = \"newco\"\n", "id = \"newco\"\nshoe_size = 44\n"),
        "[[partner]\nid = ".to_string(),
        v2.clone() + "\n[[partner]]\nid = \"acme\"\n",
    ]
    .iter()
    .enumerate()
    {
        gw.write_policy(bad);
        gw.reload_expect("failure");
        assert_eq!(gw.reloads("failure"), failures0 + i as f64 + 1.0);
        v2_in_force(&format!("bad #{i}"));
    }
    assert!(
        gw.log_text().contains("partners.toml"),
        "the reload failure is logged with the file name"
    );

    // a good policy again
    gw.write_policy(&base_policy());
    gw.reload();
    assert_eq!(gw.get_auth(scoped(ORG_ACME), &key_a, &[]).status, 200);
    assert_eq!(gw.get_auth(scoped(ORG_GLOBEX), &token("globex"), &[]).status, 200);
}

#[test]
fn sighup_rereads_key_files() {
    let (_up, gw) = base();
    let old_hs = token("acme");
    let rs = sign_cfg(Key::Rs1, &claims("acme"));
    assert_eq!(gw.get_auth(scoped(ORG_ACME), &old_hs, &[]).status, 200);
    assert_eq!(gw.get_auth(scoped(ORG_ACME), &rs, &[]).status, 200);

    // rotate the HS secret: tokens verified (and cached) under the old secret stop working
    let new_secret = b"e2e-test-only-rotated-secret-9876543210";
    let mut file = new_secret.to_vec();
    file.push(b'\n');
    gw.write("keys/hs.secret", &file);
    gw.reload();
    assert_401_bearer(
        &gw.get_auth(scoped(ORG_ACME), &old_hs, &[]),
        true,
        "old HS secret after rotation",
    );
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("hs-1".into());
    let new_hs = jsonwebtoken::encode(&h, &claims("acme"), &EncodingKey::from_secret(new_secret)).expect("encode");
    assert_eq!(gw.get_auth(scoped(ORG_ACME), &new_hs, &[]).status, 200, "new HS secret");

    // rotate the RS public key to another pair
    gw.write("keys/rs-1.pub.pem", &Key::Rs2.public_pem());
    gw.reload();
    assert_401_bearer(
        &gw.get_auth(scoped(ORG_ACME), &rs, &[]),
        true,
        "old RS key after rotation",
    );
    let rs2 = sign(Key::Rs2, Some("rs-1"), &claims("acme"));
    assert_eq!(gw.get_auth(scoped(ORG_ACME), &rs2, &[]).status, 200, "new RS key");

    // a broken key file fails the reload and keeps the keys in force
    gw.write(
        "keys/rs-1.pub.pem",
        b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
    );
    gw.reload_expect("failure");
    assert_eq!(
        gw.get_auth(scoped(ORG_ACME), &rs2, &[]).status,
        200,
        "keys kept after a failed reload"
    );
    assert_eq!(gw.get_auth(scoped(ORG_ACME), &new_hs, &[]).status, 200);
    std::fs::remove_file(gw.conf.join("keys/hs.secret")).expect("rm secret");
    gw.reload_expect("failure");
    assert_eq!(
        gw.get_auth(scoped(ORG_ACME), &new_hs, &[]).status,
        200,
        "secret kept after a failed reload"
    );
}

#[test]
fn a_request_in_flight_during_a_reload_completes() {
    let (up, gw) = base();
    let gate = Gate::new();
    up.set(
        "/partner/v1/orgs/by-external-id/slow",
        Reply::json(200, json!({"slow": true})).held(&gate),
    );
    let tok = token("acme");
    let addr = gw.addr;
    let t = tok.clone();
    let inflight = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/partner/v1/orgs/by-external-id/slow",
            &[("Authorization", &bearer(&t))],
            None,
        )
    });
    up.wait_path("/partner/v1/orgs/by-external-id/slow");
    // the reload revokes the very key the request in flight was admitted with
    gw.write_policy(&base_policy().replace(
        "revoked_keys = [\"key-leaked\"]",
        "revoked_keys = [\"key-leaked\", \"key-acme\"]",
    ));
    gw.reload();
    assert!(!inflight.is_finished());
    gate.open();
    let r = inflight.join().expect("client thread");
    assert_eq!(r.status, 200, "in-flight request dropped by a reload: {r}");
    assert_eq!(r.json(), json!({"slow": true}));
    // requests that start after the reload see the new policy
    assert_401_bearer(
        &gw.get_auth("/partner/v1/orgs/by-external-id/x", &tok, &[]),
        true,
        "after the reload",
    );
}

#[test]
fn reloads_under_load_fail_no_request() {
    let (up, gw) = base();
    let gw = Arc::new(gw);
    let tok = Arc::new(token("loadtest"));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let total = Arc::new(AtomicUsize::new(0));
    let reloads_done = Arc::new(AtomicUsize::new(0));
    const RELOADS: usize = 20;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // the reload driver: one SIGHUP about every 100 ms, each confirmed before the next
        let driver = {
            let gw = gw.clone();
            let done = reloads_done.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                for i in 0..RELOADS {
                    tick.tick().await;
                    let gw = gw.clone();
                    tokio::task::spawn_blocking(move || {
                        let policy = format!(
                            "{}\n[[partner]]\nid = \"p-{i}\"\norgs = [\"org-p-{i}\"]\n",
                            base_policy().replace(
                                &format!("orgs = [\"{ORG_LOAD}\"]"),
                                &format!("orgs = [\"{ORG_LOAD}\", \"org-extra-{i}\"]")
                            )
                        );
                        gw.write_policy(&policy);
                        gw.reload();
                    })
                    .await
                    .expect("reload task");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        };

        // ~200 requests/s from concurrent client tasks until the reloads are done
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clients = Vec::new();
        let mut n = 0usize;
        while reloads_done.load(Ordering::SeqCst) < RELOADS {
            tick.tick().await;
            let (addr, tok, failures, total) = (gw.addr, tok.clone(), failures.clone(), total.clone());
            n += 1;
            let target = if n.is_multiple_of(4) {
                "/public/load".to_string()
            } else {
                format!("/partner/v1/orgs/{ORG_LOAD}/items?n={n}")
            };
            clients.push(tokio::task::spawn_blocking(move || {
                let auth = bearer(&tok);
                total.fetch_add(1, Ordering::SeqCst);
                match try_request(addr, "GET", &target, &[("Authorization", &auth)], None) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.lock().unwrap().push(format!("{target}: {r}")),
                    Err(e) => failures.lock().unwrap().push(format!("{target}: transport error {e}")),
                }
            }));
        }
        driver.await.expect("driver");
        for c in clients {
            c.await.expect("client task");
        }
    });
    rt.shutdown_background();

    let failures = failures.lock().unwrap();
    let total = total.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed during reloads, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("load: {total} requests during {RELOADS} reloads, 0 failed");
    assert!(total >= 100, "only {total} requests were sent");
    assert!(gw.reloads("success") >= RELOADS as f64);
    assert_eq!(gw.reloads("failure"), 0.0);
    // the last policy is the one in force
    assert_eq!(
        gw.get_auth(
            scoped(&format!("org-p-{}", RELOADS - 1)),
            &token(&format!("p-{}", RELOADS - 1)),
            &[]
        )
        .status,
        200
    );
    assert_eq!(
        gw.get_auth(scoped(&format!("org-extra-{}", RELOADS - 1)), &tok, &[])
            .status,
        200
    );
    assert_error(
        &gw.get_auth(scoped("org-extra-0"), &tok, &[]),
        403,
        "org of an older policy",
    );
    assert!(up.count() >= total);
}

/// Whether a fresh connection gets a `/health` answer (short timeouts: a listener that
/// no longer accepts may leave the connection hanging in the backlog).
fn serves_new_connections(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

/// GETs `path` from another thread; returns once the upstream has the request.
fn in_flight(gw: &Gateway, up: &Upstream, path: &'static str) -> JoinHandle<io::Result<Response>> {
    let addr = gw.addr;
    let inflight = std::thread::spawn(move || try_request(addr, "GET", path, &[], None));
    up.wait_path(path);
    inflight
}

/// After SIGTERM: the in-flight request completes with 200 and the gateway exits 0.
fn completed_then_exit_0(gw: &mut Gateway, inflight: JoinHandle<io::Result<Response>>) -> Response {
    let r = inflight
        .join()
        .expect("client thread")
        .expect("in-flight request failed at shutdown");
    assert_eq!(r.status, 200, "{r}");
    let st = gw
        .wait_exit(Duration::from_secs(30))
        .expect("gateway did not exit after SIGTERM");
    assert_eq!(st.code(), Some(0), "exit status {st}");
    r
}

#[test]
fn sigterm_stops_accepting_lets_the_request_in_flight_finish_and_exits_0() {
    let config = Cfg {
        shutdown_grace: "60s".into(),
        ..Cfg::default()
    }
    .render();
    let (up, mut gw) = base_with(&config);
    let gate = Gate::new();
    up.set("/public/slow", Reply::json(200, json!({"drained": true})).held(&gate));
    let addr = gw.addr;
    let inflight = in_flight(&gw, &up, "/public/slow");
    assert!(serves_new_connections(addr));
    gw.signal("TERM");
    // the request is held upstream, so there is no race: new connections must stop being served
    wait_for(DEADLINE, "the gateway to stop accepting after SIGTERM", || {
        (!serves_new_connections(addr)).then_some(())
    });
    assert!(
        !inflight.is_finished(),
        "the in-flight request ended before the upstream answered"
    );
    gate.open();
    let r = completed_then_exit_0(&mut gw, inflight);
    assert_eq!(r.json(), json!({"drained": true}));
}

#[test]
fn sigterm_with_a_slow_request_in_flight_completes_it() {
    let (up, mut gw) = base();
    up.set(
        "/public/slow",
        Reply::json(200, json!({"drained": true})).delayed(Duration::from_secs(2)),
    );
    let inflight = in_flight(&gw, &up, "/public/slow");
    gw.signal("TERM");
    completed_then_exit_0(&mut gw, inflight);
}

#[test]
fn sigterm_and_sigint_when_idle_exit_0() {
    for sig in ["TERM", "INT"] {
        let (_up, mut gw) = base();
        assert_eq!(gw.get("/health", &[]).status, 200);
        gw.signal(sig);
        let st = gw
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no exit after SIG{sig}"));
        assert_eq!(st.code(), Some(0), "SIG{sig}: {st}");
    }
}

#[test]
fn sigterm_does_not_wait_past_shutdown_grace() {
    let config = Cfg {
        shutdown_grace: "1s".into(),
        read_timeout: "60s".into(),
        ..Cfg::default()
    }
    .render();
    let (up, mut gw) = base_with(&config);
    let never = Gate::new(); // never opened: the upstream never answers
    up.set("/public/stuck", Reply::json(200, json!({"late": true})).held(&never));
    let inflight = in_flight(&gw, &up, "/public/stuck");
    gw.signal("TERM");
    let st = gw.wait_exit(Duration::from_secs(30));
    assert!(
        st.is_some(),
        "gateway still running 30 s after SIGTERM with shutdown_grace = 1s"
    );
    // it ended before the upstream answered: the client never got the 200
    let r = inflight.join().expect("client thread");
    assert!(
        !matches!(&r, Ok(resp) if resp.status == 200),
        "the stuck request completed, so the gateway waited for it: {r:?}"
    );
}

#[test]
fn sighup_does_not_change_routes_limits_or_listeners() {
    let (_up, gw) = base();
    let text = std::fs::read_to_string(gw.config_path()).expect("config");
    let changed = text
        .replace("path = \"/public/**\"", "path = \"/elsewhere/**\"")
        .replace(
            "name = \"partner\"\nper_minute = 100",
            "name = \"partner\"\nper_minute = 1",
        );
    assert_ne!(text, changed);
    std::fs::write(gw.config_path(), changed).expect("write config");
    gw.reload();
    assert_eq!(gw.get("/public/x", &[]).status, 200, "routes changed without a restart");
    assert_error(&gw.get("/elsewhere/x", &[]), 404, "new route without a restart");
    for i in 0..3 {
        let r = gw.get_auth("/partner/v1/orgs/by-external-id/x", &token("acme"), &[]);
        assert_eq!(r.status, 200, "#{i}: limits changed without a restart: {r}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    }
}
