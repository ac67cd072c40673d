//! End-to-end fault injection for shared state (docs/reference.md#redis): real
//! `redis-server` processes, a TCP relay the test controls (tests/common/relay.rs) to
//! black-hole, heal, redirect or tamper with the gateway's Redis traffic, and real gateway
//! binaries. Each test names its fault model: what fails, how, and what must still hold.
//! Times printed with `eprintln!` are the measurements README quotes; the assertions wait
//! with the suite's deadline and never on wall-clock speed.

use std::time::{Duration, Instant};

use crate::common::redis::{import_orgs, redis_config, revoke, wait_redis_up, RedisServer, Reply};
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
