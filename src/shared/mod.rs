//! Shared state across replicas through Redis (docs/reference.md#shared-state-across-replicas): rate-limit
//! buckets, learned orgs and revocations, so N replicas behind one load balancer act as one gateway.
//!
//! The client is redis-rs (the Redis project's own Rust client): plain multiplexed
//! connections, each replaced by a new one to the configured address when it times out,
//! breaks, or answers `READONLY`/`LOADING`/`MASTERDOWN`/`OOM` ([`faults`]); a demoted primary
//! or a failed probe replaces every connection of the replica at once (an *epoch* bump).
//! On top sits a circuit: a command that fails opens it, and until the maintainer's probe (a
//! write, with back-off) succeeds again, requests do not wait on Redis at all; they fall
//! back as `on_error` says. Coming back up writes back what Redis lost.
//!
//! The stores know no application: they work on narrow [`Handles`] (the learned-org set,
//! the revocation view) and their metrics, which the `Gateway` owns and hands over.
//! Housekeeping runs on a dedicated runtime thread (`authgate-redis`); a request's own
//! commands run on its worker's connection ([`local_conn`]), so they cross no thread.

pub(crate) mod announce;
pub(crate) mod faults;
pub(crate) mod limits;
pub(crate) mod local_conn;
mod maintain;
pub(crate) mod orgs;
pub(crate) mod revocations;
pub(crate) mod view;

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::RedisResult;

use crate::config::settings::{redacted_url, OnError, RedisSettings};
use crate::metrics::{RedisConnection, RedisMetrics, RedisOp};
use crate::policy::ownership::LearnedOrgs;
use faults::{Fault, LogLimiter, Replace};
use local_conn::Lookup;
use view::RevocationView;

/// Least time a housekeeping probe (or connect) may take: a 50 ms request bound is right
/// for a request, not for opening a connection across a loaded network.
const PROBE_FLOOR: Duration = Duration::from_millis(500);
/// Time bound of resyncs and CLI commands.
pub(crate) const BULK_FLOOR: Duration = Duration::from_secs(5);

/// What the stores work on: state the `Gateway` owns and shares with them.
#[derive(Clone)]
pub(crate) struct Handles {
    /// Orgs learned from create responses (written back when Redis lost them).
    pub(crate) learned: Arc<LearnedOrgs>,
    /// The revocations this replica has applied, and how fresh they are.
    pub(crate) view: Arc<RevocationView>,
}

/// The housekeeping connection and the epoch it belongs to.
struct Housekeeping {
    epoch: u64,
    conn: MultiplexedConnection,
}

/// The Redis connections, their circuit and their metrics.
pub(crate) struct Shared {
    settings: RedisSettings,
    client: redis::Client,
    conn: ArcSwapOption<Housekeeping>,
    up: AtomicBool,
    /// Bumped to replace every connection; each connection remembers the epoch it was
    /// opened in and is not used in another.
    epoch: AtomicU64,
    /// The subscription watches it to replace itself with the rest.
    epochs: tokio::sync::watch::Sender<u64>,
    /// Wakes the maintainer when a command failed.
    trouble: tokio::sync::Notify,
    metrics: RedisMetrics,
    limit_script: redis::Script,
    /// The runtime that owns the maintainer and the subscription.
    runtime: tokio::runtime::Handle,
    /// Tells this instance's worker connections apart from another's (tests run several).
    id: u64,
    logs: LogLimiter,
    origin: Instant,
}

/// A client for `settings.url` with `TCP_NODELAY` on. redis-rs 1.x leaves Nagle's algorithm
/// on, so a command written while an earlier one is unacknowledged waits for that ACK: on a
/// multiplexed connection, where requests' commands overlap, that is most of them
/// (redis-rs issue #2195; 2.0 turns it on by default, and Redis sets it on its own side).
fn client(settings: &RedisSettings) -> RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = settings.url.as_str().into_connection_info()?;
    let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    redis::Client::open(info.set_tcp_settings(tcp))
}

/// Opening a connection: bounded as a whole (connect, handshake), and no response timer of
/// redis-rs's own, because every command is bounded where it is sent.
fn connection_config(limit: Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(None)
}

/// Source of [`Shared::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Shared {
    /// A client for `settings` (nothing is connected yet: the maintainer does that).
    pub(crate) fn new(
        settings: RedisSettings,
        metrics: RedisMetrics,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Shared> {
        let client =
            client(&settings).map_err(|e| anyhow::anyhow!("redis url {}: {e}", redacted_url(&settings.url)))?;
        metrics.up.set(0);
        Ok(Shared {
            settings,
            client,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            epoch: AtomicU64::new(1),
            epochs: tokio::sync::watch::Sender::new(1),
            trouble: tokio::sync::Notify::new(),
            metrics,
            limit_script: redis::Script::new(limits::GCRA_SCRIPT),
            runtime,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            logs: LogLimiter::new(),
            origin: Instant::now(),
        })
    }

    /// Starts the background work on the Redis runtime: the maintainer (probes,
    /// announcements, write-backs) and the revocation subscription.
    pub(crate) fn start(self: &Arc<Self>, handles: Handles) {
        self.runtime.spawn(maintain::maintain(self.clone(), handles.clone()));
        self.runtime.spawn(maintain::keep_written(handles.view.clone()));
        self.runtime.spawn(revocations::follow(self.clone(), handles.view));
    }

    /// Whether the last probe succeeded and no command failed since.
    pub(crate) fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// What requests get while Redis is unavailable.
    pub(crate) fn on_error(&self) -> OnError {
        self.settings.on_error
    }

    /// This replica's name in its announcements.
    pub(crate) fn instance_id(&self) -> &str {
        &self.settings.instance_id
    }

    /// Every key this replica writes starts with it (several deployments can share a Redis).
    pub(crate) fn key_prefix(&self) -> &str {
        &self.settings.key_prefix
    }

    /// `key_prefix` + `rest`.
    pub(crate) fn key(&self, rest: &str) -> String {
        let prefix = self.key_prefix();
        let mut k = String::with_capacity(prefix.len() + rest.len());
        k.push_str(prefix);
        k.push_str(rest);
        k
    }

    /// The per-command time bound.
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Runs one command of a request with the per-command timeout, on this worker's own
    /// connection when it is ready (else on the housekeeping one, and this worker starts
    /// opening its own). `None` when Redis is down (without trying) or when the command
    /// failed or took longer than `timeout`; a failure opens the circuit.
    pub(crate) async fn call<T, F, Fut>(&self, op: RedisOp, f: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.up() {
            return None;
        }
        let epoch = self.epoch();
        match local_conn::lookup(self.id, epoch) {
            Lookup::Ready(c) => {
                let out = self.run(op, f(c), self.settings.timeout).await;
                if let Err(fault) = &out {
                    if fault.replaces() != Replace::Nothing {
                        local_conn::forget(self.id);
                        self.metrics.replaced(RedisConnection::Worker);
                    }
                }
                return out.ok();
            }
            Lookup::Open => self.open_local(epoch),
            Lookup::Wait => {}
        }
        let hk = self.conn.load_full().filter(|h| h.epoch == epoch)?;
        let out = self.run(op, f(hk.conn.clone()), self.settings.timeout).await;
        self.after(&hk, &out);
        out.ok()
    }

    /// Opens this worker's own connection in the background, on this worker's runtime.
    fn open_local(&self, epoch: u64) {
        let (client, id) = (self.client.clone(), self.id);
        let config = connection_config(self.settings.timeout.max(PROBE_FLOOR));
        tokio::spawn(async move {
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| tracing::debug!("redis: worker connection failed, using the shared one: {e}"))
                .ok();
            local_conn::opened(id, epoch, conn);
        });
    }

    /// Runs a housekeeping command (resyncs, announcements, the CLI) on the housekeeping
    /// connection, opening one if there is none, even while the circuit is open; bounded by
    /// `timeout` or `floor`, whichever is longer.
    pub(crate) async fn housekeeping<T, F, Fut>(&self, op: RedisOp, floor: Duration, f: F) -> Result<T, Fault>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let hk = self.housekeeping_conn(op).await?;
        let out = self.run(op, f(hk.conn.clone()), self.settings.timeout.max(floor)).await;
        self.after(&hk, &out);
        out
    }

    /// A housekeeping command bounded for bulk work (resyncs, the CLI): `None` on failure.
    pub(crate) async fn bulk<T, F, Fut>(&self, op: RedisOp, f: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.housekeeping(op, BULK_FLOOR, f).await.ok()
    }

    /// The housekeeping connection of this epoch, opened when there is none.
    async fn housekeeping_conn(&self, op: RedisOp) -> Result<Arc<Housekeeping>, Fault> {
        let epoch = self.epoch();
        if let Some(hk) = self.conn.load_full().filter(|h| h.epoch == epoch) {
            return Ok(hk);
        }
        let limit = self.settings.timeout.max(PROBE_FLOOR);
        let config = connection_config(limit);
        let opened = self
            .run(
                op,
                self.client.get_multiplexed_async_connection_with_config(&config),
                limit * 2,
            )
            .await?;
        let hk = Arc::new(Housekeeping { epoch, conn: opened });
        self.conn.store(Some(hk.clone()));
        Ok(hk)
    }

    /// After a command on the housekeeping connection: replace it when the fault says so.
    fn after<T>(&self, hk: &Arc<Housekeeping>, out: &Result<T, Fault>) {
        if matches!(out, Err(f) if f.replaces() == Replace::This) {
            let current = self.conn.load();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, hk)) {
                self.conn.store(None);
                self.metrics.replaced(RedisConnection::Shared);
            }
        }
    }

    /// Runs `fut` with a time bound, counting its duration and any failure; a failure
    /// opens the circuit ([`Shared::failed`]). The bound is pingora's fast timeout (10 ms
    /// ticks, one shared timer per tick), as pingora's own I/O timeouts are: a tokio timer
    /// per command costs a wake-up of the worker's event loop (an eventfd write) whenever it
    /// is the earliest deadline, i.e. on nearly every request.
    async fn run<T>(
        &self,
        op: RedisOp,
        fut: impl Future<Output = RedisResult<T>>,
        limit: Duration,
    ) -> Result<T, Fault> {
        self.bounded(fut, limit).await.map_err(|(fault, why)| {
            self.failed(op, fault, &why);
            fault
        })
    }

    /// `fut` within `limit`, its duration observed; a failure says what it was.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = RedisResult<T>>,
        limit: Duration,
    ) -> Result<T, (Fault, String)> {
        let started = Instant::now();
        let outcome = pingora::time::fast_timeout::fast_timeout(limit, fut).await;
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((Fault::of(&e), e.to_string())),
            Err(_) => Err((Fault::Timeout, format!("no answer within {limit:?}"))),
        }
    }

    /// A failed command: counted and logged ([`Shared::note`]). When it says Redis cannot
    /// be relied on (a connection-level failure, a server state that refuses commands) the
    /// circuit opens, so requests stop waiting on Redis until a probe succeeds; an error
    /// about one command or one key (a bad value) leaves every other request on Redis.
    fn failed(&self, op: RedisOp, fault: Fault, why: &dyn Display) {
        if !fault.opens_circuit() {
            self.note(
                op,
                fault,
                &format_args!(
                    "{why} (this command only; on_error = {:?} answers its request, everything else stays on redis)",
                    self.settings.on_error
                ),
            );
            return;
        }
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up {
            self.metrics.up.set(0);
            self.trouble.notify_one();
        }
        let state = if was_up {
            "unavailable, requests fall back"
        } else {
            "still unavailable"
        };
        self.note(
            op,
            fault,
            &format_args!("{state} ({:?}): {why}", self.settings.on_error),
        );
    }

    /// Counts a failure, replaces every connection when the fault says so, and logs it
    /// (each kind at most once a second, a bad value at most once a minute).
    fn note(&self, op: RedisOp, fault: Fault, why: &dyn Display) {
        self.metrics.error(op, fault.kind());
        if fault.replaces() == Replace::All {
            self.replace_all();
        }
        if let Some(quiet) = self.logs.admit(fault, self.now_ms()) {
            tracing::warn!(
                op = op.as_str(),
                fault = fault.as_str(),
                unlogged = quiet,
                "redis: {why}"
            );
        }
    }

    /// Replaces every connection of this replica: the housekeeping one now, the workers'
    /// at their next command, the subscription as soon as it sees the new epoch.
    fn replace_all(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if self.conn.swap(None).is_some() {
            self.metrics.replaced(RedisConnection::Shared);
        }
        self.epochs.send_replace(epoch);
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.up.set(1);
            tracing::info!(url = %redacted_url(&self.settings.url), "redis available");
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Redis's clock, in milliseconds since the Unix epoch (the deadlines of CLI writes are
    /// set by it: the operator's clock may disagree with Redis's).
    pub(crate) async fn time_ms(&self) -> Option<u64> {
        self.bulk(RedisOp::Connect, |mut c| async move {
            let v: redis::Value = redis::cmd("TIME").query_async(&mut c).await?;
            time_reply(&v).ok_or_else(|| faults::unexpected("TIME answered an unexpected shape"))
        })
        .await
    }

    /// Whether Redis answers PING (the CLI's check; it never announces itself).
    pub(crate) async fn ping(&self) -> bool {
        self.housekeeping(RedisOp::Connect, PROBE_FLOOR, |mut c| async move {
            redis::cmd("PING").query_async::<redis::Value>(&mut c).await
        })
        .await
        .is_ok_and(|v| matches!(v, redis::Value::SimpleString(ref s) if s == "PONG"))
    }

    /// A separate connection for the revocation subscription, subscribed to `channel`.
    /// Its failures are counted and logged but leave the circuit alone: requests do not need
    /// the subscription, and the revocation view's freshness covers its absence.
    async fn subscription(&self, channel: &str) -> Result<redis::aio::PubSub, Fault> {
        let limit = self.settings.timeout.max(PROBE_FLOOR);
        let opened = self.bounded(self.client.get_async_pubsub(), limit).await;
        let mut pubsub = opened.map_err(|(f, why)| self.subscription_failed(f, &why))?;
        let subscribed = self.bounded(pubsub.subscribe(channel), limit).await;
        subscribed.map_err(|(f, why)| self.subscription_failed(f, &why))?;
        Ok(pubsub)
    }

    /// Counts and logs a failure of the subscription; returns the fault.
    fn subscription_failed(&self, fault: Fault, why: &dyn Display) -> Fault {
        self.note(
            RedisOp::Revocation,
            fault,
            &format_args!("revocation subscription: {why}"),
        );
        fault
    }
}

/// `TIME`'s answer (seconds, microseconds) in milliseconds.
fn time_reply(v: &redis::Value) -> Option<u64> {
    let redis::Value::Array(parts) = v else { return None };
    let number = |p: &redis::Value| match p {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse::<u64>().ok(),
        _ => None,
    };
    match parts.as_slice() {
        [secs, micros] => Some(number(secs)? * 1000 + number(micros)? / 1000),
        _ => None,
    }
}

/// Starts the Redis runtime thread, returning its handle.
pub(crate) fn start_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("authgate-redis".into())
        .spawn(
            move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
        )?;
    Ok(rx.recv()??)
}

/// One-shot connection check for `authgate check` and the CLI: `Ok` when PING answers.
pub(crate) fn ping_once(settings: &RedisSettings, limit: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = client(settings)?;
        let mut c = tokio::time::timeout(limit, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| anyhow::anyhow!("no connection within {limit:?}"))??;
        let _: String = tokio::time::timeout(limit, redis::cmd("PING").query_async(&mut c))
            .await
            .map_err(|_| anyhow::anyhow!("no PING answer within {limit:?}"))??;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_seconds_and_microseconds() {
        let bulk = |s: &str| redis::Value::BulkString(s.as_bytes().to_vec());
        let v = redis::Value::Array(vec![bulk("1700000000"), bulk("123456")]);
        assert_eq!(time_reply(&v), Some(1_700_000_000_123));
        assert_eq!(time_reply(&redis::Value::Array(vec![bulk("1")])), None);
        assert_eq!(time_reply(&redis::Value::Int(1)), None);
    }

    #[test]
    fn clients_turn_nagle_off_for_plain_and_tls_urls() {
        for url in ["redis://127.0.0.1:6379", "rediss://cache.example:6380/0"] {
            let settings = RedisSettings {
                url: url.into(),
                key_prefix: "ag:".into(),
                timeout: Duration::from_millis(50),
                on_error: OnError::Local,
                revocations_max_age: Duration::from_secs(5),
                instance_id: "test-1".into(),
            };
            let c = client(&settings).unwrap();
            assert!(c.get_connection_info().tcp_settings().nodelay(), "{url}");
        }
    }
}
