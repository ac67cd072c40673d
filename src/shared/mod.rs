//! Shared state across replicas through Redis (docs/reference.md#shared-state-across-replicas): rate-limit buckets, learned
//! orgs and revocations, so N replicas behind one load balancer act as one gateway.
//!
//! The client is redis-rs's `ConnectionManager` (one multiplexed connection that reconnects
//! by itself), chosen over fred for being the Redis project's own Rust client, with the
//! widest use and a small API. On top of it sits a circuit: every command has `timeout`;
//! a command that fails or times out marks Redis down, and until a probe (`PING`, with
//! backoff) succeeds again, requests do not wait on Redis at all — they fall back as
//! `on_error` says. Coming back up runs a resync: learned orgs and revocations that Redis
//! lost or never saw are written back.
//!
//! All Redis I/O that is not a request's own command runs on a dedicated runtime thread
//! (`authgate-redis`), so housekeeping never competes with the proxy workers. A request's
//! own commands run on its worker's connection ([`local_conn`]), so they cross no thread.

pub(crate) mod limits;
pub(crate) mod local_conn;
pub(crate) mod orgs;
pub(crate) mod revocations;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus::{Histogram, IntCounterVec, IntGauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

use crate::config::settings::{redacted_url, OnError, RedisSettings};
use crate::gateway::Gateway;
use local_conn::{Conn, Lookup};

/// Longest wait between two reconnection probes.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// First wait after Redis was found down.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// How often a healthy replica re-reads the shared revocations (besides pub/sub).
const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// What a Redis command was for (the `op` label of `authgate_redis_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Step 6: the rate-limit script.
    Limit,
    /// Step 7: is this org one a replica learned?
    OrgRead,
    /// A create response taught an org.
    OrgWrite,
    /// Revocation reads, writes and the subscription.
    Revocation,
    /// Writing back what Redis lost.
    Resync,
    /// Connecting and probing.
    Connect,
}

impl Op {
    /// Every op, for pre-declared metric children.
    pub(crate) const ALL: [Op; 6] = [
        Op::Limit,
        Op::OrgRead,
        Op::OrgWrite,
        Op::Revocation,
        Op::Resync,
        Op::Connect,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Limit => "limit",
            Op::OrgRead => "org_read",
            Op::OrgWrite => "org_write",
            Op::Revocation => "revocation",
            Op::Resync => "resync",
            Op::Connect => "connect",
        }
    }
}

/// The Redis metrics (docs/reference.md#metrics) (registered only when `[redis]` is configured, so a
/// "Redis down" alert never fires on an embedded deployment).
#[derive(Clone)]
pub(crate) struct RedisMetrics {
    pub(crate) up: IntGauge,
    pub(crate) errors: IntCounterVec,
    pub(crate) duration: Histogram,
}

/// The Redis connection, its circuit and its metrics.
pub(crate) struct Shared {
    settings: RedisSettings,
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    up: AtomicBool,
    /// Wakes the maintainer when a command failed.
    trouble: tokio::sync::Notify,
    metrics: RedisMetrics,
    limit_script: redis::Script,
    merge_script: redis::Script,
    /// The runtime that owns the maintainer and the subscription.
    runtime: tokio::runtime::Handle,
    /// Tells this instance's worker connections apart from another's (tests run several).
    id: u64,
    /// Bumped each time Redis comes back, so workers reopen their own connections.
    generation: AtomicU64,
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

/// Source of [`Shared::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Shared {
    /// A client for `settings` (nothing is connected yet; [`maintain`] does that).
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
            trouble: tokio::sync::Notify::new(),
            metrics,
            limit_script: redis::Script::new(limits::GCRA_SCRIPT),
            merge_script: redis::Script::new(revocations::MERGE_SCRIPT),
            runtime,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        })
    }

    /// Whether the last command or probe succeeded.
    pub(crate) fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// What requests get while Redis is unavailable.
    pub(crate) fn on_error(&self) -> OnError {
        self.settings.on_error
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

    /// Runs one command of a request with the per-command timeout, on this worker's own
    /// connection when it is ready (else on the shared one, and this worker starts opening
    /// its own). `None` when Redis is down (without trying), when the command fails, or when
    /// it takes longer than `timeout`; the last two count an error and open the circuit.
    pub(crate) async fn call<T, F, Fut>(&self, op: Op, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.up() {
            return None;
        }
        let generation = self.generation.load(Ordering::Acquire);
        match local_conn::lookup(self.id, generation) {
            Lookup::Ready(c) => {
                let out = self.run(op, f(Conn::Local(c)), self.settings.timeout).await;
                if out.is_none() {
                    local_conn::forget(self.id);
                }
                return out;
            }
            Lookup::Open => self.open_local(generation),
            Lookup::Wait => {}
        }
        let conn = self.conn.load_full()?;
        self.run(op, f(Conn::Manager((*conn).clone())), self.settings.timeout)
            .await
    }

    /// Opens this worker's own connection in the background, on this worker's runtime.
    fn open_local(&self, generation: u64) {
        let (client, id) = (self.client.clone(), self.id);
        let limit = self.settings.timeout.max(Duration::from_millis(500));
        // connection_timeout bounds the whole set-up (connect, handshake); no response
        // timer of redis-rs's own: `run` bounds every command
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(None);
        tokio::spawn(async move {
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| tracing::debug!("redis: worker connection failed, using the shared one: {e}"))
                .ok();
            local_conn::opened(id, generation, conn);
        });
    }

    /// Like [`Shared::call`] but tries even while the circuit is open, and waits up to 5 s
    /// (or `timeout`, if longer): for resyncs and the CLI, not for requests.
    pub(crate) async fn run_unbounded<T, F, Fut>(&self, op: Op, f: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.conn.load_full()?;
        let limit = self.settings.timeout.max(Duration::from_secs(5));
        self.run(op, f(Conn::Manager((*conn).clone())), limit).await
    }

    /// Runs `fut` with a time bound, counting its duration and any failure. The bound is
    /// pingora's fast timeout (10 ms ticks, one shared timer per tick), as pingora's own I/O
    /// timeouts are: a tokio timer per command costs a wake-up of the worker's event loop
    /// (an eventfd write) whenever it is the earliest deadline, i.e. on nearly every request.
    async fn run<T>(&self, op: Op, fut: impl Future<Output = RedisResult<T>>, limit: Duration) -> Option<T> {
        let started = Instant::now();
        let outcome = pingora::time::fast_timeout::fast_timeout(limit, fut).await;
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(op, &format!("{e}"));
                None
            }
            Err(_) => {
                self.failed(op, &format!("no answer within {:?}", limit));
                None
            }
        }
    }

    fn failed(&self, op: Op, why: &str) {
        self.metrics.errors.with_label_values(&[op.as_str()]).inc();
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.up.set(0);
            tracing::warn!(
                op = op.as_str(),
                "redis unavailable, falling back ({:?}): {why}",
                self.settings.on_error
            );
            self.trouble.notify_one();
        } else {
            tracing::debug!(op = op.as_str(), "redis command failed: {why}");
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.metrics.up.set(1);
            tracing::info!(url = %redacted_url(&self.settings.url), "redis available");
        }
    }

    /// Runs `fut` on the Redis runtime and blocks this (non-runtime) thread until it ends or
    /// `timeout` passes. For the synchronous response-body phase: learning an org must reach
    /// Redis before the create response completes.
    pub(crate) fn block_on_runtime<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
        limit: Duration,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(limit).ok()
    }

    /// The per-command time bound.
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Connects (or probes an existing connection) once; true when Redis answered PING.
    pub(crate) async fn probe(&self) -> bool {
        let limit = self.settings.timeout.max(Duration::from_millis(500));
        let conn = match self.conn.load_full() {
            Some(c) => c,
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(limit))
                    .set_number_of_retries(2)
                    .set_min_delay(MIN_BACKOFF)
                    .set_max_delay(MAX_BACKOFF);
                let made = self.run(
                    Op::Connect,
                    ConnectionManager::new_with_config(self.client.clone(), config),
                    limit * 2,
                );
                match made.await {
                    Some(c) => {
                        let c = Arc::new(c);
                        self.conn.store(Some(c.clone()));
                        c
                    }
                    None => return false,
                }
            }
        };
        let mut c = (*conn).clone();
        let pong: Option<String> = self
            .run(Op::Connect, redis::cmd("PING").query_async(&mut c), limit)
            .await;
        pong.is_some()
    }

    /// A separate connection for the revocation subscription.
    async fn pubsub(&self) -> Option<redis::aio::PubSub> {
        let limit = self.settings.timeout.max(Duration::from_millis(500));
        self.run(Op::Revocation, self.client.get_async_pubsub(), limit).await
    }
}

/// Keeps the connection healthy for the life of the process: connects with backoff, probes
/// while the circuit is open, and after every (re)connect writes back what Redis may have
/// lost (learned orgs, revocations). Spawned on the Redis runtime.
pub(crate) async fn maintain(gw: Arc<Gateway>) {
    let Some(shared) = gw.shared.as_ref() else {
        return;
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        if shared.probe().await {
            backoff = MIN_BACKOFF;
            let first = !shared.up();
            if first {
                // Write back before admitting requests to Redis again, so a restarted,
                // empty Redis never answers "not learned" / "not revoked" for long.
                orgs::push_all(&gw).await;
                revocations::sync(&gw).await;
                shared.mark_up();
            }
            if first || !shared.sentinel_present().await {
                // first contact, or Redis lost its data while we were connected (a restart
                // without persistence between two probes)
                if !first {
                    orgs::push_all(&gw).await;
                    revocations::sync(&gw).await;
                }
                shared.set_sentinel().await;
            }
            tokio::select! {
                _ = shared.trouble.notified() => {}
                _ = tokio::time::sleep(RESYNC_EVERY) => {
                    revocations::sync(&gw).await;
                }
            }
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

impl Shared {
    /// A key that exists while Redis keeps the data this replica wrote back; its absence
    /// means Redis restarted empty.
    async fn sentinel_present(&self) -> bool {
        let key = self.key("alive");
        let n: Option<i64> = self
            .run_unbounded(Op::Resync, |mut c| async move {
                redis::cmd("EXISTS").arg(&key).query_async(&mut c).await
            })
            .await;
        n != Some(0)
    }

    async fn set_sentinel(&self) {
        let key = self.key("alive");
        let _: Option<()> = self
            .run_unbounded(Op::Resync, |mut c| async move {
                redis::cmd("SET").arg(&key).arg(1).query_async(&mut c).await
            })
            .await;
    }
}

/// Starts the background work of `[redis]` on its runtime: the connection maintainer and
/// the revocation subscription. Nothing without `[redis]`.
pub(crate) fn start(gw: &Arc<Gateway>) {
    if let Some(s) = &gw.shared {
        s.runtime.spawn(maintain(gw.clone()));
        s.runtime.spawn(revocations::subscribe(gw.clone()));
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
    fn clients_turn_nagle_off_for_plain_and_tls_urls() {
        for url in ["redis://127.0.0.1:6379", "rediss://cache.example:6380/0"] {
            let settings = RedisSettings {
                url: url.into(),
                key_prefix: "ag:".into(),
                timeout: Duration::from_millis(50),
                on_error: OnError::Local,
            };
            let c = client(&settings).unwrap();
            assert!(c.get_connection_info().tcp_settings().nodelay(), "{url}");
        }
    }
}
