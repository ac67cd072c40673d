//! End-to-end fault injection for shared state (docs/reference.md#redis): real
//! `redis-server` processes, a TCP relay the test controls (tests/common/relay.rs) to
//! black-hole, heal, redirect or tamper with the gateway's Redis traffic, and real gateway
//! binaries. Each test names its fault model: what fails, how, and what must still hold.
//! Times printed with `eprintln!` are the measurements README quotes; the assertions wait
//! with the suite's deadline and never on wall-clock speed.

use std::time::{Duration, Instant};

use crate::common::redis::{
    import_orgs, key_token, ops, redis_config, redis_config_on, replace_once, revoke, store_revocations, wait_redis_up,
    RedisServer, Reply, PREFIX,
};
use crate::common::relay::Relay;
use crate::common::*;

const PLAIN: &str = "/plain";

fn start(up: &Upstream, config: &str) -> Gateway {
    Gateway::start(&up.address(), config, &base_policy(), &[])
}

fn status(gw: &Gateway, path: &str) -> u16 {
    gw.get_auth(path, &token("acme"), &[]).status
}

/// Waits until `path` answers `want` on `gw`; returns how long that took from `since`.
fn wait_status(gw: &Gateway, path: &str, want: u16, since: Instant, what: &str) -> Duration {
    wait_for(DEADLINE, what, || (status(gw, path) == want).then_some(()));
    since.elapsed()
}

fn replaced(gw: &Gateway, connection: &str) -> f64 {
    gw.metrics().sum(
        "authgate_redis_connections_replaced_total",
        &[("connection", connection)],
    )
}

/// Fault: a network partition between one replica and Redis: every packet of its open and
/// new connections vanishes (no FIN, no RST), while the other replica and the operator's
/// CLI still reach Redis. A key is revoked during the cut.
/// What must hold: the revocation is acknowledged per replica (the cut one `NOT applied`,
/// exit 3); the cut replica never keeps admitting the key under `on_error = "deny"` past
/// `revocations_max_age` (it answers 503 instead); under `"local"` it serves on its last view
/// (the documented availability trade-off) while its age gauge shows the staleness; both
/// refuse the key once the path heals.
#[test]
fn a_partitioned_replica_refuses_under_deny_and_revoke_reports_it_not_applied() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr);
    let up = Upstream::start();
    let max_age = "revocations_max_age = \"2s\"\n";
    let cut = start(
        &up,
        &redis_config(&relay.url(), "deny", "100ms", max_age, Some("replica-cut")),
    );
    let local = start(
        &up,
        &redis_config(&relay.url(), "local", "100ms", max_age, Some("replica-local")),
    );
    let direct = start(
        &up,
        &redis_config(&redis.url(), "deny", "100ms", max_age, Some("replica-direct")),
    );
    for gw in [&cut, &local, &direct] {
        wait_redis_up(gw, 1.0);
        assert_eq!(status(gw, PLAIN), 200);
    }

    relay.black_hole();
    let cut_at = Instant::now();
    // deny: once the view is older than max_age (the last answered ping + 2 s), no request on
    // an authenticating route is decided on it, revoked key or not
    let refused = wait_status(&cut, PLAIN, 503, cut_at, "503 on the cut replica under deny");
    let r = cut.get_auth(PLAIN, &token("acme"), &[]);
    assert_error(&r, 503, "stale revocations under deny");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        get(cut.admin, "/readyz", &[]).status,
        200,
        "readiness stays after the first read"
    );
    eprintln!("partition: the cut replica (deny, max_age 2s) answered 503 {refused:?} after the cut");

    let out = revoke(&direct, "acme", "key-acme", &["--wait", "3s"]);
    assert_eq!(out.code(), Some(3), "{}", out.all());
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "replica-cut NOT applied",
            "replica-direct applied",
            "replica-local NOT applied"
        ],
        "{}",
        out.all()
    );
    assert_eq!(status(&direct, PLAIN), 401, "the reachable replica refuses at once");
    assert_eq!(status(&cut, PLAIN), 503);
    // local: availability first, and the age says how stale
    assert_eq!(status(&local, PLAIN), 200);
    local.wait_metric_where("authgate_revocations_age_seconds > 2", |m| {
        m.sum("authgate_revocations_age_seconds", &[]) > 2.0
    });

    relay.heal();
    let healed = Instant::now();
    let back = wait_status(
        &cut,
        PLAIN,
        401,
        healed,
        "the cut replica refuses the key after the heal",
    );
    wait_status(
        &local,
        PLAIN,
        401,
        healed,
        "the local replica refuses the key after the heal",
    );
    assert_401_bearer(
        &cut.get_auth(PLAIN, &token("acme"), &[]),
        true,
        "revoked after the heal",
    );
    eprintln!("partition: the cut replica refused the revoked key {back:?} after the path healed");
}

/// Fault: Redis is unreachable (connection refused) when a new replica starts, and it has
/// no revocation state file (a new container).
/// What must hold: it is not ready and serves nothing on authenticating routes (503), while
/// unauthenticated routes work; once Redis answers (restarted empty) it reads the
/// revocations another replica writes back and refuses the revoked key.
#[test]
fn a_replica_started_while_redis_is_down_serves_nothing_authenticated_until_it_has_read_revocations() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let old = start(&up, &redis_config(&redis.url(), "local", "100ms", "", None));
    wait_redis_up(&old, 1.0);
    let out = revoke(&old, "acme", "key-acme", &[]);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    redis.kill();
    let config = redis_config(&redis.url(), "local", "100ms", "", None);
    let new = Gateway::start_with(
        &up.address(),
        &config,
        &base_policy(),
        &[],
        StartOpts { wait_ready: false },
    );
    // the proxy listener is up and serves what needs no shared state (answered by this
    // gateway: our request id, forwarded to our upstream)...
    wait_for(DEADLINE, "the proxy listener", || {
        let r = try_request(new.addr, "GET", "/health", &[("X-Request-Id", "probe-new")], None).ok()?;
        (r.status == 200 && r.proxied() && r.request_id() == "probe-new").then_some(())
    });
    // ...but the replica is not ready and decides nothing on an empty revocation view
    assert_eq!(get(new.admin, "/readyz", &[]).status, 503);
    let r = new.get_auth(PLAIN, &token("acme"), &[]);
    assert_error(&r, 503, "no revocation view yet");

    redis.restart();
    wait_for(DEADLINE, "/readyz 200 once the revocations were read", || {
        (get(new.admin, "/readyz", &[]).status == 200).then_some(())
    });
    // the old replica wrote its revocation back into the empty Redis; the new one has it
    wait_status(
        &new,
        PLAIN,
        401,
        Instant::now(),
        "the revoked key refused by the new replica",
    );
    assert_eq!(new.get_auth(PLAIN, &token("globex"), &[]).status, 200);
}

/// Fault: the path to Redis dies silently (no FIN, no RST) with connections open; later the
/// network heals for new connections, while the old ones stay dead.
/// What must hold: requests never wait past the timeout (they fall back); the dead
/// connections are replaced, and the replica is back on Redis within seconds of the heal
/// (target <= 5 s), sharing limits again, without a restart.
#[test]
fn a_dead_path_is_replaced_and_the_replica_is_back_on_redis_after_the_heal() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr);
    let up = Upstream::start();
    let gw = start(&up, &redis_config(&relay.url(), "local", "100ms", "", None));
    wait_redis_up(&gw, 1.0);
    assert_eq!(status(&gw, "/tiny"), 200);

    relay.black_hole();
    let cut = Instant::now();
    assert_eq!(status(&gw, "/tiny"), 200, "falls back within the timeout");
    wait_redis_up(&gw, 0.0);
    eprintln!("dead path: redis_up 0 {:?} after the cut", cut.elapsed());

    relay.heal();
    let healed = Instant::now();
    wait_redis_up(&gw, 1.0);
    let back = healed.elapsed();
    eprintln!("dead path: redis_up 1 {back:?} after the heal");
    assert!(
        replaced(&gw, "shared") >= 1.0,
        "the dead housekeeping connection was replaced"
    );
    // limits are shared again: the bucket lives in Redis
    let _ = redis.cmd(&["FLUSHALL"]);
    wait_for(DEADLINE, "a bucket in redis again", || {
        status(&gw, "/tiny");
        (!redis.keys("e2e:rl:*").is_empty()).then_some(())
    });
}

/// Fault: a failover behind one address: the relay (a managed primary endpoint) sends new
/// connections to a new primary, while the old primary is demoted (a replica of a primary
/// that is gone: writes answer READONLY) and stays reachable on the connections already open.
/// What must hold: every connection of every replica, the subscription included, moves to
/// the new primary without a restart: limits are counted there, and a revocation stored
/// there is applied by every replica (`revoke` exits 0).
#[test]
fn a_failover_behind_one_address_moves_every_connection_and_the_subscription() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let relay = Relay::start(old.addr);
    let up = Upstream::start();
    let gws: Vec<Gateway> = (0..2)
        .map(|_| start(&up, &redis_config(&relay.url(), "local", "100ms", "", None)))
        .collect();
    for gw in &gws {
        wait_redis_up(gw, 1.0);
        assert_eq!(status(gw, "/tiny"), 200);
    }
    assert_eq!(old.subscriber_ports().len(), 2);

    relay.redirect(new.addr);
    let gone = closed_addr();
    let (host, port) = gone.rsplit_once(':').unwrap();
    assert_eq!(old.cmd(&["REPLICAOF", host, port]), Reply::Status("OK".into()));
    let failover = Instant::now();
    wait_for(DEADLINE, "both subscriptions on the new primary", || {
        (new.subscriber_ports().len() == 2).then_some(())
    });
    let moved = failover.elapsed();
    for gw in &gws {
        wait_redis_up(gw, 1.0);
    }
    eprintln!("failover: both subscriptions on the new primary {moved:?} after it");
    let out = revoke(&gws[0], "acme", "key-acme", &[]);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    assert_eq!(
        out.stdout.lines().filter(|l| l.ends_with(" applied")).count(),
        2,
        "{}",
        out.all()
    );
    for gw in &gws {
        assert_eq!(status(gw, PLAIN), 401);
        gw.get_auth("/tiny", &token("globex"), &[]);
    }
    assert!(
        new.keys("e2e:rl:*").iter().any(|k| k.contains("{partner:globex}")),
        "limits counted on the new primary"
    );
    assert!(
        gws[0].metrics().sum(
            "authgate_redis_connections_replaced_total",
            &[("connection", "subscription")]
        ) >= 1.0
    );
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Fault: Redis answers PING but refuses every write (`maxmemory` reached with
/// `noeviction`: OOM), under steady request load.
/// What must hold: requests are served on the fallback, and the gateway backs off instead
/// of spinning: at most 10 attempts a second (counted errors), each kind of error logged at
/// most once a second, little CPU; when writes are accepted again it is back on Redis.
#[test]
fn a_redis_that_refuses_writes_makes_the_gateway_back_off_not_spin() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gw = start(&up, &redis_config(&redis.url(), "local", "100ms", "", None));
    wait_redis_up(&gw, 1.0);
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    assert_eq!(status(&gw, "/tiny"), 200, "served on the fallback");
    wait_redis_up(&gw, 0.0);

    let window = Duration::from_secs(3);
    let errors_before = gw.metrics().sum("authgate_redis_errors_total", &[]);
    let log_before = gw.log_text().matches("\"redis: ").count();
    let cpu_before = cpu_seconds(gw.pid());
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < window {
        let s = status(&gw, "/tiny");
        assert!(s == 200 || s == 429, "{s}");
        served += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(gw.pid()) - cpu_before) / elapsed;
    let errors = gw.metrics().sum("authgate_redis_errors_total", &[]) - errors_before;
    let logged = gw.log_text().matches("\"redis: ").count() - log_before;
    eprintln!(
        "write refusal: {served} requests in {elapsed:.1}s, {errors} redis errors, {logged} log lines, \
         gateway CPU {:.1}% of a core (requests included)",
        cpu * 100.0
    );
    assert!(
        errors <= 10.0 * elapsed + 2.0,
        "{errors} errors in {elapsed:.1}s: the gateway spins"
    );
    assert!(
        (logged as f64) <= 2.0 * (elapsed + 1.0),
        "{logged} log lines in {elapsed:.1}s"
    );

    // and with no requests at all: the maintainer alone must not spin either
    let cpu_before = cpu_seconds(gw.pid());
    let idle_started = Instant::now();
    let errors_before = gw.metrics().sum("authgate_redis_errors_total", &[]);
    wait_for(DEADLINE, "an idle window", || {
        (idle_started.elapsed() >= window).then_some(())
    });
    let idle = (cpu_seconds(gw.pid()) - cpu_before) / idle_started.elapsed().as_secs_f64();
    let idle_errors = gw.metrics().sum("authgate_redis_errors_total", &[]) - errors_before;
    eprintln!(
        "write refusal, no requests: gateway CPU {:.2}% of a core, {idle_errors} redis errors in {:.1}s",
        idle * 100.0,
        idle_started.elapsed().as_secs_f64()
    );
    assert!(
        idle < 0.2,
        "an idle gateway used {:.0}% of a core while Redis refused writes",
        idle * 100.0
    );

    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_redis_up(&gw, 1.0);
}

/// Fault: only the revocation subscription dies silently (its packets vanish; no FIN, no
/// RST), everything else stays healthy. A key is revoked right after.
/// What must hold: the replica notices (a ping unanswered), subscribes again and reads the
/// whole set, so the revocation is applied (`revoke --wait` sees it) well before the 10 s
/// periodic re-read, and the key is refused.
#[test]
fn a_silently_dead_subscription_is_replaced_and_the_revocation_still_arrives() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr);
    let up = Upstream::start();
    let max_age = "revocations_max_age = \"3s\"\n";
    let gw = start(&up, &redis_config(&relay.url(), "deny", "100ms", max_age, Some("sub")));
    wait_redis_up(&gw, 1.0);
    let ports = wait_for(DEADLINE, "the subscription", || {
        let p = redis.subscriber_ports();
        (p.len() == 1).then_some(p)
    });
    assert!(
        relay.black_hole_port(ports[0]),
        "the subscription goes through the relay"
    );
    let killed = Instant::now();
    let out = revoke(&gw, "acme", "key-acme", &["--wait", "8s"]);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    assert_eq!(out.stdout.trim(), "sub applied", "{}", out.all());
    let applied = killed.elapsed();
    assert_eq!(status(&gw, PLAIN), 401);
    eprintln!("dead subscription: revocation applied {applied:?} after the subscription went silent (max_age 3s)");
    let now = redis.subscriber_ports();
    assert!(now.iter().any(|p| *p != ports[0]), "a new subscription: {now:?}");
    assert!(replaced(&gw, "subscription") >= 1.0);
}

/// Fault: Redis is unreachable (refused) while an operator imports orgs; and an import for
/// a partner id the policy file does not list (a typo).
/// What must hold: the import exits 1 having written nothing, neither to Redis nor to the
/// journal, and says to run it again; an unknown partner is refused unless asked for.
#[test]
fn orgs_import_is_all_or_nothing_and_refuses_unknown_partners() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let gw = start(&up, &redis_config(&redis.url(), "local", "100ms", "", None));
    wait_redis_up(&gw, 1.0);
    let journal = gw.conf.join("partners.toml.orgs.jsonl");
    let before = std::fs::read(&journal).unwrap_or_default();
    redis.kill();
    let out = import_orgs(&gw, &["--partner", "acme"], b"legacy-1\n");
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.stderr.contains("run the import again"), "{}", out.all());
    assert_eq!(
        std::fs::read(&journal).unwrap_or_default(),
        before,
        "the journal is untouched"
    );

    redis.restart();
    let out = import_orgs(&gw, &["--partner", "acme-typo"], b"legacy-1\n");
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.stderr.contains("acme-typo"), "{}", out.all());
    assert!(redis.smembers("e2e:orgs:acme-typo").is_empty());
    let out = import_orgs(
        &gw,
        &["--partner", "acme-typo", "--allow-unknown-partner"],
        b"legacy-1\n",
    );
    assert_eq!(out.code(), Some(0), "{}", out.all());
    let out = import_orgs(&gw, &["--partner", "acme"], b"legacy-1\nlegacy-2\n");
    assert_eq!(out.code(), Some(0), "{}", out.all());
    assert_eq!(out.stdout.trim(), "2");
    assert_eq!(redis.smembers("e2e:orgs:acme"), vec!["legacy-1", "legacy-2"]);
    assert!(std::fs::read_to_string(&journal).unwrap().contains("legacy-2"));
}

/// Fault: the ownership lookup's reply comes back as a status (`+OK`) instead of an integer
/// (a misbehaving proxy or server in front of Redis).
/// What must hold: the reply is an error, never a grant: the org is not owned (403 under
/// `local`, 503 under `deny`), and the error is counted.
#[test]
fn a_non_integer_reply_to_an_ownership_lookup_is_an_error_not_a_grant() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr);
    relay.tamper("SISMEMBER", b"+OK\r\n");
    let up = Upstream::start();
    let local = start(&up, &redis_config(&relay.url(), "local", "100ms", "", None));
    let deny = start(&up, &redis_config(&relay.url(), "deny", "100ms", "", None));
    let path = "/partner/v1/orgs/org-never-created/users";
    for (gw, want) in [(&local, 403), (&deny, 503)] {
        wait_redis_up(gw, 1.0);
        let r = gw.get_auth(path, &token("acme"), &[]);
        assert_error(&r, want, "a status reply to SISMEMBER");
        assert!(gw.metrics().sum("authgate_redis_errors_total", &[("op", "org_read")]) >= 1.0);
    }
    assert!(up.for_path(path).is_empty(), "nothing reached the upstream");
}

// ------------------------------------------------------------------------------------------
// Security state that stays true (docs/reference.md#partial-failures): each test below
// failed on the code before it (named in its fault model).
// ------------------------------------------------------------------------------------------

/// The revocation state file of a gateway started by these tests.
fn state_file(gw: &Gateway) -> std::path::PathBuf {
    gw.conf.join("partners.toml.revocations.jsonl")
}

/// `GET /plain` with `token`: its status.
fn status_with(gw: &Gateway, token: &str) -> u16 {
    gw.get_auth(PLAIN, token, &[]).status
}

/// Waits until `gw`'s `/readyz` answers `want`.
fn wait_ready(gw: &Gateway, want: u16) {
    wait_for(DEADLINE, &format!("/readyz {want}"), || {
        (get(gw.admin, "/readyz", &[]).status == want).then_some(())
    });
}

/// `authgate_state_write_failures_total{file}` of `gw`.
fn write_failures(gw: &Gateway, file: &str) -> f64 {
    gw.metrics()
        .sum("authgate_state_write_failures_total", &[("file", file)])
}

/// Fault: a replica is frozen (SIGSTOP: a paused container, a VM its host stalls) for longer
/// than `revocations_max_age` under `on_error = "deny"`, and a key is revoked during the
/// freeze. Requests with that key are queued on its sockets when it resumes, and more follow.
/// Failed before: its first ping after the resume marked the view fresh before the revocation
/// queued ahead of the ping's answer was applied (21 and 69 requests served 200 in the audit).
/// Must hold: from the resume on, the key is never served: 503 while the view catches up,
/// then 401; in each of three trials.
#[test]
fn a_replica_frozen_past_max_age_never_serves_a_key_revoked_during_the_freeze() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let max_age = "revocations_max_age = \"1s\"\n";
    let gw = start(
        &up,
        &redis_config(&redis.url(), "deny", "100ms", max_age, Some("frozen")),
    );
    wait_redis_up(&gw, 1.0);
    for trial in 0..3 {
        let key = format!("key-freeze-{trial}");
        let tok = key_token("acme", &key);
        wait_for(DEADLINE, "the key served before the freeze", || {
            (status_with(&gw, &tok) == 200).then_some(())
        });
        gw.freeze();
        let frozen = Instant::now();
        let out = revoke(&gw, "acme", &key, &["--wait", "1s"]);
        assert_eq!(
            out.code(),
            Some(3),
            "the frozen replica cannot have applied it: {}",
            out.all()
        );
        // requests already on the replica's sockets when it resumes
        let queued: Vec<_> = (0..6)
            .map(|_| {
                let (addr, auth) = (gw.addr, bearer(&tok));
                std::thread::spawn(move || get(addr, PLAIN, &[("Authorization", &auth)]).status)
            })
            .collect();
        wait_for(DEADLINE, "a freeze longer than revocations_max_age", || {
            (frozen.elapsed() >= Duration::from_millis(1600)).then_some(())
        });
        gw.resume();
        let mut seen = Vec::new();
        wait_for(DEADLINE, "the revoked key refused after the resume", || {
            let s = status_with(&gw, &tok);
            seen.push(s);
            (s == 401).then_some(())
        });
        seen.extend(queued.into_iter().map(|t| t.join().unwrap()));
        eprintln!("freeze trial {trial}: statuses after the resume {seen:?}");
        assert!(
            !seen.contains(&200),
            "trial {trial}: a key revoked during the freeze was served: {seen:?}"
        );
        assert!(seen.iter().all(|s| *s == 401 || *s == 503), "{seen:?}");
    }
}

/// Fault: the revocation set is large: 5,000 records when a new replica starts, then 3,000
/// more published at once (a leaked batch revoked by a script).
/// Failed before: each record rebuilt the whole set and was fsynced on its own, so a new
/// replica needed 10 s to become ready with 1,000 records and 61 s with 2,000, and a burst
/// reached a `deny` replica up to 58 s late while it counted as fresh.
/// Must hold: the new replica is ready and refuses the records, and every replica refuses
/// the last record of the burst, well within the suite's deadline (the times are printed).
#[test]
fn thousands_of_revocations_apply_in_bulk_at_start_and_in_a_burst() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let seeded: Vec<String> = (0..5000).map(|i| format!("bulk-{i}")).collect();
    store_revocations(&redis, "acme", &seeded, false);
    let began = Instant::now();
    let gws: Vec<Gateway> = ["deny", "local"]
        .iter()
        .map(|mode| start(&up, &redis_config(&redis.url(), mode, "200ms", "", None)))
        .collect();
    eprintln!(
        "bulk: two replicas ready against 5,000 records {:?} after the first start",
        began.elapsed()
    );
    for gw in &gws {
        assert_eq!(status_with(gw, &key_token("acme", "bulk-4999")), 401);
        assert_eq!(status_with(gw, &key_token("acme", "not-revoked")), 200);
    }
    let burst: Vec<String> = (0..3000).map(|i| format!("burst-{i}")).collect();
    store_revocations(&redis, "acme", &burst, true);
    let published = Instant::now();
    let last = key_token("acme", "burst-2999");
    for gw in &gws {
        wait_for(DEADLINE, "the last record of the burst refused", || {
            (status_with(gw, &last) == 401).then_some(())
        });
    }
    eprintln!(
        "bulk: 3,000 records published at once refused by both replicas {:?} after",
        published.elapsed()
    );
    assert_eq!(status_with(&gws[0], &key_token("acme", "burst-0")), 401);
    wait_for(DEADLINE, "every record in the state file, once", || {
        let lines = std::fs::read_to_string(state_file(&gws[0])).unwrap().lines().count();
        (lines == 1 + 5000 + 3000).then_some(())
    });
}

/// Fault: Redis restarts without its data after many records (a cache without persistence,
/// a failover to an empty node); one replica is then frozen while a key is revoked.
/// Failed before: the record counter restarted below the replicas' watermarks, so
/// `revoke --wait` printed "<frozen replica> applied" and exited 0 for a record it never saw.
/// Must hold: an acknowledgement counts only in the record's epoch: the frozen replica is
/// `NOT applied` (exit 3) and the live one `applied`; once resumed it refuses the key.
#[test]
fn after_redis_lost_its_data_revoke_counts_only_acknowledgements_of_the_new_epoch() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let a = start(
        &up,
        &redis_config(&redis.url(), "local", "200ms", "", Some("replica-a")),
    );
    let b = start(
        &up,
        &redis_config(&redis.url(), "local", "200ms", "", Some("replica-b")),
    );
    for gw in [&a, &b] {
        wait_redis_up(gw, 1.0);
    }
    for _ in 0..4 {
        for verb in ["revoke", "unrevoke"] {
            let out = ops(&a, &[verb], &["--partner", "acme", "--key-id", "key-pump"], None);
            assert_eq!(out.code(), Some(0), "{}", out.all());
        }
    }
    redis.restart();
    // both replicas wrote their knowledge back into the empty Redis
    wait_for(DEADLINE, "the pumped key's record written back", || {
        (redis.cmd(&["HLEN", &format!("{PREFIX}revocations")]).int() >= 1).then_some(())
    });
    for gw in [&a, &b] {
        wait_redis_up(gw, 1.0);
    }
    let out = ops(
        &a,
        &["revoke"],
        &["--partner", "acme", "--key-id", "key-warm", "--wait", "10s"],
        None,
    );
    assert_eq!(
        out.code(),
        Some(0),
        "both replicas acknowledge in the new epoch: {}",
        out.all()
    );
    b.freeze();
    let out = revoke(&a, "acme", "key-acme", &["--wait", "2s"]);
    b.resume();
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["replica-a applied", "replica-b NOT applied"], "{}", out.all());
    assert_eq!(out.code(), Some(3), "{}", out.all());
    wait_for(DEADLINE, "the resumed replica refuses the key", || {
        (status(&b, PLAIN) == 401).then_some(())
    });
}

/// Fault: the disk under the revocation state file fills up (a file-size limit on the
/// process: the next record is written only in part), on a `local` and a `deny` replica.
/// Failed before: the record was applied and acknowledged anyway, and the torn fragment it
/// left swallowed the next record, so a restart without Redis served both keys (under this
/// test's file-size limit the old gateway did not even get that far: SIGXFSZ killed it).
/// Must hold: the fragment is cut back; the record is refused at once (never fail open) but
/// not acknowledged (`revoke` exits 3), the failure is counted, the replica is not ready and
/// `deny` answers 503; once the disk has room it is written, and a restart without Redis
/// refuses every revoked key.
#[test]
fn a_revocation_the_state_file_does_not_take_is_cut_back_retried_and_not_acknowledged() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let mut local = start(
        &up,
        &redis_config(&redis.url(), "local", "200ms", "", Some("full-local")),
    );
    let deny = start(&up, &redis_config(&redis.url(), "deny", "200ms", "", Some("full-deny")));
    for gw in [&local, &deny] {
        wait_redis_up(gw, 1.0);
    }
    let out = revoke(&local, "acme", "key-1", &[]);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    for gw in [&local, &deny] {
        let len = std::fs::metadata(state_file(gw)).unwrap().len();
        gw.limit_file_size(Some(len + 40));
    }
    let out = revoke(&local, "acme", "key-2", &["--wait", "2s"]);
    assert_eq!(out.code(), Some(3), "{}", out.all());
    assert!(
        out.stdout.contains("full-local NOT applied") && out.stdout.contains("full-deny NOT applied"),
        "{}",
        out.all()
    );
    assert_eq!(
        status_with(&local, &key_token("acme", "key-2")),
        401,
        "in force though not written"
    );
    for gw in [&local, &deny] {
        assert!(write_failures(gw, "revocations") >= 1.0);
        assert_eq!(get(gw.admin, "/readyz", &[]).status, 503);
    }
    assert_eq!(status(&local, PLAIN), 200, "local serves on its view");
    assert_error(
        &deny.get_auth(PLAIN, &token("acme"), &[]),
        503,
        "deny while a revocation is unwritten",
    );
    for gw in [&local, &deny] {
        gw.limit_file_size(None);
        wait_ready(gw, 200);
    }
    let out = revoke(&local, "acme", "key-3", &[]);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    redis.kill();
    local.restart();
    for key in ["key-1", "key-2", "key-3"] {
        assert_eq!(
            status_with(&local, &key_token("acme", key)),
            401,
            "{key} after a restart without redis"
        );
    }
}

/// Fault: the disk under the learned-orgs journal fills up while a create response teaches
/// an org (a file-size limit: the line is written only in part); no Redis.
/// Failed before: the torn line swallowed the next org's line and no failure was counted;
/// a restart lost both orgs (under this test's file-size limit the old gateway was killed by
/// SIGXFSZ mid-response).
/// Must hold: the create response still passes; the failure is counted and the gateway is
/// not ready until the line is written; once the disk has room it is, the next org is
/// appended whole, and a restart knows every org.
#[test]
fn a_learned_org_the_journal_does_not_take_is_retried_and_swallows_nothing() {
    let (_up, mut gw) = base();
    let auth = bearer(&token("acme"));
    let create = |gw: &Gateway| {
        let r = gw.req(
            "POST",
            "/partner/v1/orgs",
            &[("Authorization", &auth)],
            Some(br#"{"name":"x"}"#),
        );
        assert_eq!(r.status, 201, "{r}");
        r.json()["id"].as_str().unwrap().to_string()
    };
    let first = create(&gw);
    let journal = gw.conf.join("partners.toml.orgs.jsonl");
    gw.limit_file_size(Some(std::fs::metadata(&journal).unwrap().len() + 20));
    let torn = create(&gw);
    assert!(write_failures(&gw, "learned_orgs") >= 1.0);
    assert_eq!(get(gw.admin, "/readyz", &[]).status, 503);
    gw.limit_file_size(None);
    wait_ready(&gw, 200);
    let next = create(&gw);
    gw.restart();
    for org in [&first, &torn, &next] {
        let r = gw.get_auth(format!("/partner/v1/orgs/{org}/users"), &token("acme"), &[]);
        assert_eq!(r.status, 200, "{org} after a restart: {r}");
    }
}

/// Fault: the revocation state file is damaged while the replica is down and Redis is too:
/// one flipped byte, then (a second time) emptied to 0 bytes.
/// Failed before: `authgate check` said nothing, and the replica started ready, with Redis
/// down, serving the revoked key, and rewrote the damaged line away.
/// Must hold: `authgate check` names the file and line; the replica treats the file as
/// missing (not ready, 503 on authenticating routes) and keeps it as
/// `<name>.damaged-<unix seconds>`; once Redis is back (refilled by another replica) it reads
/// the revocations and refuses the key.
#[test]
fn a_damaged_revocation_state_file_is_kept_aside_and_treated_as_missing() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let config = redis_config(&redis.url(), "local", "200ms", "", None);
    let keeper = start(&up, &config);
    let mut gw = start(&up, &config);
    let out = revoke(&gw, "acme", "key-acme", &[]);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    let path = state_file(&gw);
    let whole = std::fs::read(&path).unwrap();
    let flipped = {
        let mut b = whole.clone();
        let at = b.len() - 10; // inside the record's JSON
        b[at] ^= 0x01;
        b
    };
    for (n, damaged) in [flipped, Vec::new()].into_iter().enumerate() {
        assert!(gw.stop(Duration::from_secs(10)).is_some());
        redis.kill();
        std::fs::write(&path, &damaged).unwrap();
        let check = run_cli(
            &gw.conf,
            &["check", "--config", gw.config_path().to_str().unwrap()],
            None,
            DEADLINE,
        );
        assert_eq!(check.code(), Some(0), "{}", check.all());
        let line = if damaged.is_empty() { 1 } else { 2 };
        assert!(
            check.stderr.contains(&format!("{}:{line}:", path.display())),
            "{}",
            check.all()
        );
        gw.start_again(StartOpts { wait_ready: false });
        wait_for(DEADLINE, "the restarted replica's proxy listener", || {
            let r = try_request(gw.addr, "GET", "/health", &[], None).ok()?;
            (r.status == 200).then_some(())
        });
        assert_eq!(
            get(gw.admin, "/readyz", &[]).status,
            503,
            "damage {n}: a damaged file is a missing file"
        );
        assert_error(
            &gw.get_auth(PLAIN, &token("acme"), &[]),
            503,
            "no usable revocation view",
        );
        let kept = kept_copies(&path);
        assert_eq!(kept.len(), n + 1, "{kept:?}");
        assert_eq!(std::fs::read(kept.last().unwrap()).unwrap(), damaged, "kept as it was");
        redis.restart();
        wait_ready(&gw, 200);
        wait_for(DEADLINE, "the key refused once redis was read", || {
            (status(&gw, PLAIN) == 401).then_some(())
        });
    }
    assert_eq!(status(&keeper, PLAIN), 401);
}

/// The damaged files set aside next to `path` (`<name>.damaged-<unix seconds>`), by name.
fn kept_copies(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let prefix = format!("{}.damaged-", path.file_name().unwrap().to_string_lossy());
    let mut kept: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    kept.sort();
    kept
}

/// Fault: Redis loses its data while three replicas run (a FLUSHALL, a restart without
/// persistence); two of them had learned an org each, under `on_error = "deny"`.
/// Failed before: only the first replica to notice wrote its orgs back, then restored the
/// marker that told the others to skip theirs: the orgs learned through the other two stayed
/// missing, and every other replica answered a definitive 403, under `deny` too.
/// Must hold: every replica notices and writes back its own orgs; the third replica, which
/// learned neither, accepts both.
#[test]
fn after_a_flushall_every_replica_writes_back_the_orgs_it_learned() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws: Vec<Gateway> = (0..3)
        .map(|_| start(&up, &redis_config(&redis.url(), "deny", "200ms", "", None)))
        .collect();
    for gw in &gws {
        wait_redis_up(gw, 1.0);
    }
    let auth = bearer(&token("acme"));
    let orgs: Vec<String> = gws[1..]
        .iter()
        .map(|gw| {
            let r = gw.req(
                "POST",
                "/partner/v1/orgs",
                &[("Authorization", &auth)],
                Some(br#"{"name":"x"}"#),
            );
            assert_eq!(r.status, 201, "{r}");
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(redis.cmd(&["FLUSHALL"]), Reply::Status("OK".into()));
    let flushed = Instant::now();
    for org in &orgs {
        wait_for(DEADLINE, "the replica that learned neither accepts both orgs", || {
            let r = gws[0].get_auth(format!("/partner/v1/orgs/{org}/users"), &token("acme"), &[]);
            (r.status == 200).then_some(())
        });
    }
    eprintln!(
        "flushall: both orgs back in redis {:?} after the flush",
        flushed.elapsed()
    );
    let mut back = redis.smembers(&format!("{PREFIX}orgs:acme"));
    let mut want = orgs.clone();
    back.sort();
    want.sort();
    assert_eq!(back, want);
}

/// Fault: another program sharing the Redis writes a foreign value into one partner's
/// rate-limit bucket (a string that is not a number, then a hash), and into its org set.
/// Failed before: the limit script's error opened the replica's whole circuit: every other
/// partner got 503 (`deny`) or fell back to per-replica limits (`local`).
/// Must hold: only that partner gets `on_error` (503 under `deny`, its local bucket under
/// `local`); every other partner keeps using Redis; the error is counted as
/// `kind="bad_value"` and logged naming the key.
#[test]
fn a_foreign_value_in_one_partners_key_is_that_partners_problem() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let deny = start(&up, &redis_config(&redis.url(), "deny", "200ms", "", None));
    let local = start(&up, &redis_config(&redis.url(), "local", "200ms", "", None));
    for gw in [&deny, &local] {
        wait_redis_up(gw, 1.0);
        assert_eq!(gw.get_auth("/tiny", &token("acme"), &[]).status, 200);
    }
    let bucket = format!("{PREFIX}rl:{{partner:acme}}:30:4:tiny");
    assert!(
        redis.keys(&format!("{PREFIX}rl:*")).contains(&bucket),
        "{:?}",
        redis.keys("*")
    );
    let foreign: [&[&str]; 2] = [&["SET", &bucket, "not-a-number"], &["HSET", &bucket, "f", "v"]];
    for poke in foreign {
        redis.cmd(&["DEL", &bucket]);
        redis.cmd(poke);
        assert_error(
            &deny.get_auth("/tiny", &token("acme"), &[]),
            503,
            "deny: acme's bucket is foreign",
        );
        assert_eq!(
            local.get_auth("/tiny", &token("acme"), &[]).status,
            200,
            "local: acme's own bucket"
        );
        for gw in [&deny, &local] {
            assert_eq!(gw.get_auth("/tiny", &token("globex"), &[]).status, 200);
            assert_eq!(
                gw.metrics().sum("authgate_redis_up", &[]),
                1.0,
                "the circuit stays closed"
            );
        }
    }
    // globex's bucket is in Redis: both replicas counted its requests there
    let globex = redis.keys(&format!("{PREFIX}rl:{{partner:globex}}*"));
    assert_eq!(globex.len(), 1, "{globex:?}");
    for gw in [&deny, &local] {
        let bad = gw
            .metrics()
            .sum("authgate_redis_errors_total", &[("op", "limit"), ("kind", "bad_value")]);
        assert!(bad >= 1.0, "{bad}");
        wait_for(DEADLINE, "the log names the key", || {
            gw.log_text().contains(&bucket).then_some(())
        });
    }
    // an org set that is not a set: acme's ownership lookups only
    let orgs = format!("{PREFIX}orgs:acme");
    redis.cmd(&["SET", &orgs, "x"]);
    let path = "/partner/v1/orgs/org-never-created/users";
    assert_error(
        &deny.get_auth(path, &token("acme"), &[]),
        503,
        "deny: acme's org set is foreign",
    );
    assert_error(
        &local.get_auth(path, &token("acme"), &[]),
        403,
        "local: not owned as far as it knows",
    );
    assert_error(
        &deny.get_auth(path, &token("globex"), &[]),
        403,
        "globex asks its own set",
    );
    assert_eq!(deny.metrics().sum("authgate_redis_up", &[]), 1.0);
}

/// Fault: an operator's mistakes and a gateway deployment the command does not reach: a
/// partner or org id with a typo, and a `key_prefix` typo in the command's config (no
/// replica announces itself under it).
/// Failed before: `revoke --partner acmee` succeeded silently (while `orgs import` refused
/// the same typo), and `revoke --wait` exited 0 having reached nobody.
/// Must hold: an id the policy file does not list is refused (exit 1, nothing stored) unless
/// `--allow-unknown`; with no replica announced, exit 3 with "no replica has announced itself
/// under <key_prefix>: nothing is known to have applied it".
#[test]
fn revoke_refuses_typos_and_says_when_it_reached_no_replica() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gw = start(&up, &redis_config(&redis.url(), "local", "200ms", "", Some("only")));
    wait_redis_up(&gw, 1.0);
    let hash = format!("{PREFIX}revocations");
    for who in [["--partner", "acmee"], ["--org", "org-acme-typo"]] {
        let out = ops(&gw, &["revoke"], &[who[0], who[1], "--key-id", "k"], None);
        assert_eq!(out.code(), Some(1), "{}", out.all());
        assert!(
            out.stderr.contains(who[1]) && out.stderr.contains("--allow-unknown"),
            "{}",
            out.all()
        );
    }
    assert_eq!(redis.cmd(&["HLEN", &hash]).int(), 0, "nothing stored");
    let out = ops(
        &gw,
        &["revoke"],
        &["--partner", "acmee", "--key-id", "k", "--allow-unknown"],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.all());
    // an org the policy file names (a partner's org) is no typo
    let out = ops(&gw, &["unrevoke"], &["--org", ORG_ACME, "--key-id", "k"], None);
    assert_eq!(out.code(), Some(0), "{}", out.all());

    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let typo = replace_once(
        &text,
        &format!("key_prefix = \"{PREFIX}\""),
        "key_prefix = \"e2e-typo:\"",
    );
    gw.write("typo.toml", typo.as_bytes());
    let cfg = gw.conf.join("typo.toml");
    let args = [
        "revoke",
        "--config",
        cfg.to_str().unwrap(),
        "--partner",
        "acme",
        "--key-id",
        "k2",
        "--wait",
        "1s",
    ];
    let out = run_cli(&gw.conf, &args, None, DEADLINE);
    assert_eq!(out.code(), Some(3), "{}", out.all());
    assert!(
        out.stderr
            .contains("no replica has announced itself under e2e-typo:: nothing is known to have applied it"),
        "{}",
        out.all()
    );
    assert_eq!(out.stdout, "", "no replica line: {}", out.all());
}

/// Fault: the command's write reaches Redis after the command gave up (its 5 s bound): a
/// relay holds the write script for 7 s, as a paused server or a stalled network would.
/// Failed before: the command said "nothing was imported/stored", and then the write landed
/// anyway (orgs granted, a revocation stored behind the operator's back).
/// Must hold: the command says the outcome is unknown and that running it again is safe
/// (exit 4), and the late write does not land: the script refuses past its deadline, by
/// Redis's own clock.
#[test]
fn a_write_that_reaches_redis_after_the_commands_deadline_never_lands() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr);
    let up = Upstream::start();
    let gw = start(&up, &redis_config(&redis.url(), "local", "200ms", "", Some("late")));
    wait_redis_up(&gw, 1.0);
    // the scripts are known to Redis (the held command is the script itself, not a load)
    assert_eq!(import_orgs(&gw, &["--partner", "acme"], b"warm-1\n").code(), Some(0));
    assert_eq!(revoke(&gw, "acme", "key-warm", &[]).code(), Some(0));
    relay.delay("EVALSHA", Duration::from_secs(7));
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    gw.write("slow.toml", replace_once(&text, &redis.url(), &relay.url()).as_bytes());
    let cfg = gw.conf.join("slow.toml");
    let cfg = cfg.to_str().unwrap();
    let runs: [&[&str]; 2] = [
        &["orgs", "import", "--config", cfg, "--partner", "acme", "-"],
        &["revoke", "--config", cfg, "--partner", "acme", "--key-id", "key-late"],
    ];
    for (i, args) in runs.into_iter().enumerate() {
        let out = run_cli(&gw.conf, args, Some(b"late-1\n"), DEADLINE);
        assert_eq!(out.code(), Some(4), "{}", out.all());
        assert!(
            out.stderr.contains("the outcome is unknown; running it again is safe"),
            "{}",
            out.all()
        );
        assert!(!out.stderr.contains("nothing was"), "{}", out.all());
        wait_for(DEADLINE, "the held write passed on to redis", || {
            (relay.held_so_far() > i && relay.holding() == 0).then_some(())
        });
    }
    // the held writes reached Redis 7 s after they were sent, past their deadlines, and
    // were answered (the relay counts a held command until its reply is back)
    assert!(!redis
        .smembers(&format!("{PREFIX}orgs:acme"))
        .contains(&"late-1".to_string()));
    let field = r#"["partner","acme","key-late"]"#;
    assert_eq!(redis.cmd(&["HEXISTS", &format!("{PREFIX}revocations"), field]).int(), 0);
    assert_eq!(status_with(&gw, &key_token("acme", "key-late")), 200);
}

/// Fault: Redis answers a learned-org write in 0.8 s (a slow or overloaded server; the
/// relay holds every `SADD`), on a gateway with one worker thread.
/// Failed before: the write was awaited on the worker thread itself, so unrelated requests
/// on that worker waited up to 1.6 s behind it.
/// Must hold: the create response waits for the write (the org is in Redis when the client
/// has its 201), and an unrelated request sent while the write is held is answered before
/// the create response.
#[test]
fn a_slow_learned_org_write_holds_the_create_response_not_the_worker() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.addr);
    relay.delay("SADD", Duration::from_millis(800));
    let up = Upstream::start();
    let one_worker = Cfg {
        threads: 1,
        ..Cfg::default()
    };
    let gw = start(&up, &redis_config_on(one_worker, &relay.url(), "local", "2s", "", None));
    wait_redis_up(&gw, 1.0);
    assert_eq!(status(&gw, PLAIN), 200);
    let (addr, auth) = (gw.addr, bearer(&token("acme")));
    let create = std::thread::spawn(move || {
        let r = request(
            addr,
            "POST",
            "/partner/v1/orgs",
            &[("Authorization", &auth)],
            Some(br#"{"name":"x"}"#),
        );
        (r, Instant::now())
    });
    wait_for(DEADLINE, "the learned org's write held on its way to redis", || {
        (relay.holding() == 1).then_some(())
    });
    let asked = Instant::now();
    let plain = gw.get_auth(PLAIN, &token("globex"), &[]);
    let answered = Instant::now();
    assert_eq!(plain.status, 200);
    assert_eq!(
        relay.holding(),
        1,
        "the unrelated request was answered while the write was still held"
    );
    let (created, created_at) = create.join().unwrap();
    assert_eq!(created.status, 201, "{created}");
    eprintln!(
        "slow org write: an unrelated request answered in {:?}; the create response {:?} after it",
        answered - asked,
        created_at.saturating_duration_since(answered)
    );
    assert!(
        answered < created_at,
        "the unrelated request waited for the create's write"
    );
    let org = created.json()["id"].as_str().unwrap().to_string();
    assert!(
        redis.smembers(&format!("{PREFIX}orgs:acme")).contains(&org),
        "the 201 came after the write"
    );
}
