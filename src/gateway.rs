//! The running gateway's shared state: settings, the policy snapshot behind arc-swap, and
//! the state that outlives a reload (rate-limit buckets, learned orgs, token cache).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::tls_files::TlsMaterial;
use crate::config::{PolicyFiles, Problems, Settings};
use crate::journal::{Journal, JournalWriter};
use crate::metrics::{Metrics, StateFile};
use crate::policy::client_ip::ClientIp;
use crate::policy::denial::Denial;
use crate::policy::jwt::{KeySet, VerifyKey};
use crate::policy::ownership::LearnedOrgs;
use crate::policy::pipeline::{decide, Embedded, Gate, Identity, RequestFacts, SharedState, Snapshot};
use crate::policy::principal::Principal;
use crate::policy::rate_limit::{Headroom, OverrideBuckets, RateLimits};
use crate::policy::token_cache::{TokenCache, DEFAULT_CAPACITY};
use crate::shared::view::RevocationView;
use crate::shared::{Handles, Shared};
use crate::tls::TlsState;

/// State shared by the proxy workers, the admin listener and the reload task.
///
/// Its fields are private: the proxy, the admin listener and the server ask it (admit a
/// request, learn an org, count a request, reload), and it does, so each transaction over
/// its state is written once, here.
pub(crate) struct Gateway {
    settings: Arc<Settings>,
    snapshot: ArcSwap<Snapshot>,
    limits: RateLimits,
    tokens: TokenCache,
    learned: Arc<LearnedOrgs>,
    journal: Arc<Journal>,
    /// The journal's writer thread: appends never run on a proxy worker.
    journal_writer: JournalWriter,
    metrics: Metrics,
    /// Redis (`[redis]`); `None` = the embedded default.
    shared: Option<Arc<Shared>>,
    /// Revocations made with `authgate revoke`, as this replica knows them, with the local
    /// state file that keeps them and how fresh they are.
    revocations: Arc<RevocationView>,
    /// Keys from `[[jwt.keys]]` and the JWKS file (replaced on reload).
    file_keys: ArcSwap<Vec<Arc<VerifyKey>>>,
    /// Keys from the JWKS URL (replaced on each good fetch).
    url_keys: ArcSwap<Vec<Arc<VerifyKey>>>,
    /// Serialises snapshot writers (reload, JWKS refresh); readers never take it.
    writer: Mutex<()>,
    /// Requests between head and log line (graceful shutdown waits for zero).
    in_flight: AtomicUsize,
    listener_up: AtomicBool,
    draining: AtomicBool,
    /// Wakes the JWKS URL refresher early (unknown kid), at most once per [`JWKS_KICK_INTERVAL`].
    jwks_kick: tokio::sync::Notify,
    last_kick_ms: AtomicU64,
    started: Instant,
    /// The TLS listener's certificate, key and client CA (`[server.tls]`; replaced on reload).
    tls: Option<Arc<TlsState>>,
}

/// The key set in force: fetched keys first, then the pinned ones, so a pinned kid always
/// wins (later keys replace earlier ones in a [`KeySet`]).
fn merge_keys(pinned: &[Arc<VerifyKey>], fetched: &[Arc<VerifyKey>]) -> KeySet {
    KeySet::from_shared(fetched.iter().chain(pinned.iter()).cloned())
}

/// Logs the certificate the TLS listener serves from now on, and warns when it expires soon.
fn log_tls(m: &TlsMaterial, what: &str) {
    tracing::info!(serial = %m.serial, not_after = m.not_after, "TLS certificate {what}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if let Some(w) = m.expiry_warning(now) {
        tracing::warn!("{w}");
    }
}

/// Longest a create response waits for its learned org to be written (a hung disk must not
/// hold it forever; the write is retried all the same).
const LEARN_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// What an HTTP/2 create response allows the journal's append and fsync ([`Gateway::learn_pause`]).
const JOURNAL_ALLOWANCE: Duration = Duration::from_millis(50);

/// Opens the revocation view on its state file (with `[redis]`, freshness counts).
fn open_revocations(settings: &Settings, metrics: &Metrics) -> anyhow::Result<RevocationView> {
    let max_age = settings.redis.as_ref().map(|r| r.revocations_max_age);
    let failures = metrics.state_write_failures(StateFile::Revocations);
    RevocationView::open(&settings.revocations_file(), max_age, metrics.redis(), failures).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the revocation state file {}: {e}",
            settings.revocations_file().display()
        )
    })
}

/// Least time between two refetches caused by tokens with an unknown kid.
pub(crate) const JWKS_KICK_INTERVAL: Duration = Duration::from_secs(10);

/// An admitted request, as the proxy keeps it (owned: it outlives the snapshot it was
/// decided on).
pub(crate) struct Pass {
    pub(crate) route: usize,
    pub(crate) identity: Identity,
    pub(crate) client_ip: ClientIp,
    pub(crate) headroom: Option<Headroom>,
    /// `learn_org_from_response` of the route.
    pub(crate) learn: Option<String>,
    /// Step 7a: hold the body and check it against the operation's schema.
    pub(crate) hold: Option<crate::openapi::HeldBody>,
    /// Step 7a under `validate = "report"`: the head's failures, to log and count.
    pub(crate) reported: Option<Box<crate::openapi::Rejection>>,
}

/// A refused request, as the proxy keeps it.
pub(crate) struct Block {
    pub(crate) route: Option<usize>,
    pub(crate) denial: Denial,
    pub(crate) identity: Identity,
    pub(crate) client_ip: ClientIp,
}

/// The gateway's stores for steps 6 and 7: Redis when configured, else this process.
struct Stores<'a> {
    gw: &'a Gateway,
}

impl Stores<'_> {
    /// This process's memory: the whole store without `[redis]`, the `local` fallback with it.
    fn embedded(&self) -> Embedded<'_> {
        Embedded {
            limits: &self.gw.limits,
            learned: &self.gw.learned,
        }
    }
}

impl SharedState for Stores<'_> {
    async fn charge(
        &self,
        overrides: &OverrideBuckets,
        limits: &[usize],
        principal: &Principal,
    ) -> Result<Option<Headroom>, Denial> {
        match &self.gw.shared {
            Some(s) => s.charge(&self.embedded(), overrides, limits, principal).await,
            None => self.embedded().charge(overrides, limits, principal).await,
        }
    }

    async fn learned(&self, partner: &str, org: &str) -> Result<bool, Denial> {
        match &self.gw.shared {
            Some(s) => s.learned(&self.gw.learned, partner, org).await,
            None => self.embedded().learned(partner, org).await,
        }
    }
}

/// Counts a request as in flight until dropped.
pub(crate) struct InFlight(Arc<Gateway>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gateway {
    /// Builds the state from a loaded config; replays the learned-orgs journal.
    pub(crate) fn new(settings: Settings, policy: PolicyFiles) -> anyhow::Result<Arc<Gateway>> {
        let routes = settings.fixed.routes.iter().map(|r| {
            let cluster = settings.route_upstream(r.index).cluster;
            let upstream = settings.upstreams.get(cluster).map_or("", |c| &*c.name);
            (&*r.name, upstream)
        });
        let metrics = Metrics::new(routes, settings.redis.is_some())?;
        let revocations = Arc::new(open_revocations(&settings, &metrics)?);
        let limits = RateLimits::new(settings.limits.clone(), Default::default());
        let learned = Arc::new(LearnedOrgs::new());
        let journal = Journal::open(
            &settings.learned_orgs_file,
            &learned,
            metrics.state_write_failures(StateFile::LearnedOrgs),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the learned-orgs journal {}: {e}",
                settings.learned_orgs_file.display()
            )
        })?;
        let journal = Arc::new(journal);
        let journal_writer = journal.start_writer(learned.clone())?;
        metrics.set_learned_orgs(learned.len());
        metrics.set_partners(policy.directory.partner_count());
        for spec in settings.fixed.routes.specs() {
            for op in spec.spec().operations() {
                metrics.declare_validation(op.id());
            }
        }
        let overrides = limits.build_overrides(&policy.directory, None);
        let tls = match policy.tls {
            Some(material) => {
                log_tls(&material, "loaded");
                Some(TlsState::new(material, metrics.tls()?))
            }
            None => None,
        };
        let snapshot = Snapshot {
            directory: Arc::new(policy.directory),
            keys: Arc::new(KeySet::from_shared(policy.keys.iter().cloned())),
            overrides: Arc::new(overrides),
        };
        // The stores start here and belong to the gateway: Redis gets the handles it needs.
        let shared = match (&settings.redis, metrics.redis()) {
            (Some(redis), Some(m)) => {
                let runtime = crate::shared::start_runtime()?;
                let shared = Arc::new(Shared::new(redis.clone(), m, runtime)?);
                shared.start(Handles {
                    learned: learned.clone(),
                    view: revocations.clone(),
                });
                Some(shared)
            }
            _ => None,
        };
        Ok(Arc::new(Gateway {
            settings: Arc::new(settings),
            snapshot: ArcSwap::from_pointee(snapshot),
            limits,
            tokens: TokenCache::new(DEFAULT_CAPACITY),
            learned,
            journal,
            journal_writer,
            metrics,
            shared,
            revocations,
            file_keys: ArcSwap::from_pointee(policy.keys),
            url_keys: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
            in_flight: AtomicUsize::new(0),
            listener_up: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            jwks_kick: tokio::sync::Notify::new(),
            last_kick_ms: AtomicU64::new(0),
            started: Instant::now(),
            tls,
        }))
    }

    /// Steps 0-7 for one request against one consistent policy snapshot, with the rate
    /// limits and learned orgs in Redis when `[redis]` is configured.
    pub(crate) async fn admit(&self, facts: &RequestFacts<'_>) -> Result<Pass, Block> {
        let snapshot = self.snapshot.load_full();
        let on_error = self
            .settings
            .redis
            .as_ref()
            .map_or(crate::config::settings::OnError::Local, |r| r.on_error);
        let gate = Gate {
            fixed: &self.settings.fixed,
            snapshot: &snapshot,
            tokens: &self.tokens,
            revoked: self.revocations.revocations(),
            revocations_usable: self.revocations.usable(on_error),
        };
        match decide(&gate, &Stores { gw: self }, facts).await {
            Ok(a) => Ok(Pass {
                route: a.route.index,
                identity: a.identity,
                client_ip: a.client_ip,
                headroom: a.headroom,
                learn: a.route.learn_org_pointer.clone(),
                hold: a.checks.hold,
                reported: a.checks.reported,
            }),
            Err(r) => Err(Block {
                route: r.route.map(|r| r.index),
                denial: r.denial,
                identity: r.identity,
                client_ip: r.client_ip,
            }),
        }
    }

    /// A create response taught `partner` the org `org` (`learn_org_from_response`): kept in
    /// memory now; appended to the journal (fsync, on the journal's writer thread) and, with
    /// `[redis]`, written to Redis (on the Redis runtime). The returned future resolves once
    /// both are done (or failed: then counted, logged and retried or written back later), so
    /// the proxy holds the create response on it, and never the worker thread: every replica
    /// accepts the org once the client has its answer.
    pub(crate) fn learn_org(
        &self,
        partner: &str,
        org: &str,
        request_id: &str,
    ) -> impl Future<Output = ()> + Send + 'static {
        let journaled = self.learned.learn(partner, org).then(|| {
            self.metrics.set_learned_orgs(self.learned.len());
            let (done, landed) = tokio::sync::oneshot::channel::<()>();
            let failures = self.metrics.journal_failures();
            let id = request_id.to_string();
            self.journal_writer.append(
                partner,
                org,
                Box::new(move |ok| {
                    if !ok {
                        failures.inc();
                        tracing::error!(
                            request_id = id,
                            "learned org not yet in the journal; retried until it is"
                        );
                    }
                    let _ = done.send(());
                }),
            );
            landed
        });
        let shared = self.shared.as_ref().map(|s| s.record(partner, org));
        let id = request_id.to_string();
        async move {
            let wait = async {
                if let Some(landed) = journaled {
                    let _ = landed.await;
                }
                if let Some(wrote) = shared {
                    if !matches!(wrote.await, Ok(true)) {
                        tracing::warn!(
                            request_id = id,
                            "learned org not yet in redis; it is written back when redis is available"
                        );
                    }
                }
            };
            if tokio::time::timeout(LEARN_WAIT_LIMIT, wait).await.is_err() {
                tracing::warn!(
                    request_id = id,
                    "learned org still being written after {LEARN_WAIT_LIMIT:?}: the create response completes"
                );
            }
        }
    }

    /// How long an HTTP/2 create response pauses for its learned org (it cannot be held on
    /// the write itself there): the Redis timeout plus an allowance for the journal's fsync.
    pub(crate) fn learn_pause(&self) -> Duration {
        let redis = self.settings.redis.as_ref().map_or(Duration::ZERO, |r| r.timeout);
        redis + JOURNAL_ALLOWANCE
    }

    /// The validated `authgate.toml` the gateway runs with (fixed for the process).
    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The metrics, for wiring at start (the upstream clusters' health gauges); requests
    /// are counted through [`Self::record_request`] and [`Self::upstream_answered`].
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The TLS listener's state (`[server.tls]`), `None` on a plain-HTTP listener.
    pub(crate) fn tls(&self) -> Option<&Arc<TlsState>> {
        self.tls.as_ref()
    }

    /// Counts one finished request: its status (when a response was written), and the
    /// denial it got, if any, with the rate limit that refused it.
    pub(crate) fn record_request(
        &self,
        route: Option<usize>,
        method: &str,
        status: Option<u16>,
        seconds: f64,
        denial: Option<&Denial>,
        identity: &Identity,
    ) {
        if let Some(status) = status {
            self.metrics.request(route, method, status, seconds);
        }
        if let Some(d) = denial {
            self.metrics.denied(route, d.reason());
            if let Denial::RateLimited { limit, .. } = d {
                self.metrics.rate_limited(limit, identity.partner_label());
            }
        }
    }

    /// Counts a request's step-7a failures, once per failing location (`report` mode counts
    /// what it let through; `enforce` what it refused).
    pub(crate) fn record_validation(&self, route: Option<usize>, failed: crate::openapi::Locations) {
        for location in failed.iter() {
            self.metrics.validation_failure(route, location);
        }
    }

    /// Counts the upstream's time to its response head.
    pub(crate) fn upstream_answered(&self, route: Option<usize>, seconds: f64) {
        self.metrics.upstream(route, seconds);
    }

    /// Drops rate-limit buckets that are full again (every 10 s), so memory follows the
    /// principals active now.
    pub(crate) fn prune_limits(&self) {
        self.limits.prune();
    }

    /// The Prometheus text of `/metrics`, with the gauges read at scrape time brought up to date.
    pub(crate) fn render_metrics(&self) -> String {
        self.revocations.publish_gauges();
        self.metrics.render()
    }

    /// Re-reads the policy file, the key files and the TLS files (SIGHUP). On any problem
    /// nothing changes: the old policy, keys and certificate stay in force; the outcome is
    /// counted either way.
    pub(crate) fn reload(&self) -> Result<(), Problems> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match crate::config::load_policy_files(&self.settings) {
            Ok(files) => {
                let old = self.snapshot.load_full();
                let overrides = self.limits.build_overrides(&files.directory, Some(&old.overrides));
                let url_keys = self.url_keys.load();
                let keys = merge_keys(&files.keys, &url_keys);
                if let (Some(state), Some(material)) = (&self.tls, files.tls) {
                    log_tls(&material, "reloaded");
                    state.install(material);
                }
                self.metrics.set_partners(files.directory.partner_count());
                self.file_keys.store(Arc::new(files.keys));
                self.snapshot.store(Arc::new(Snapshot {
                    directory: Arc::new(files.directory),
                    keys: Arc::new(keys),
                    overrides: Arc::new(overrides),
                }));
                self.metrics.reload(true);
                // orgs another writer (`authgate orgs import`) appended since start
                match self.journal.refresh(&self.learned) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(orgs = n, "learned orgs picked up from the journal"),
                    Err(e) => tracing::warn!("cannot re-read the learned-orgs journal: {e}"),
                }
                self.metrics.set_learned_orgs(self.learned.len());
                tracing::info!("policy reloaded");
                Ok(())
            }
            Err(problems) => {
                self.metrics.reload(false);
                for p in &problems.0 {
                    tracing::error!("reload rejected, previous policy kept: {p}");
                }
                Err(problems)
            }
        }
    }

    /// Installs a freshly fetched JWKS URL key set (a fetch counted as good). A fetched key whose kid is pinned by the
    /// config (`[[jwt.keys]]` or the JWKS file) is ignored, logged and counted: whoever
    /// controls the URL must not be able to replace a pinned key.
    pub(crate) fn set_url_keys(&self, fetched: Vec<Arc<VerifyKey>>) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.snapshot.load_full();
        let file_keys = self.file_keys.load();
        let mut keys = Vec::with_capacity(fetched.len());
        for k in fetched {
            if file_keys.iter().any(|f| f.kid == k.kid) {
                tracing::warn!(kid = %k.kid, "JWKS URL key ignored: its kid is pinned by the config");
                self.metrics.jwks_key_ignored();
            } else {
                keys.push(k);
            }
        }
        let set = merge_keys(&file_keys, &keys);
        self.url_keys.store(Arc::new(keys));
        self.snapshot.store(Arc::new(Snapshot {
            keys: Arc::new(set),
            ..Snapshot::clone(&old)
        }));
        self.metrics.jwks_fetch(true);
    }

    /// A JWKS URL fetch failed: counted; the last good key set stays in force.
    pub(crate) fn jwks_fetch_failed(&self) {
        self.metrics.jwks_fetch(false);
    }

    /// A token named a kid we do not have: ask the JWKS URL refresher for an early fetch,
    /// at most once per [`JWKS_KICK_INTERVAL`] (an attacker cannot make us hammer the issuer).
    pub(crate) fn jwks_kick(&self) {
        if self.settings.jwks.as_ref().is_none_or(|j| j.url.is_none()) {
            return;
        }
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last_kick_ms.load(Ordering::Acquire);
        let interval = JWKS_KICK_INTERVAL.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        if self
            .last_kick_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.jwks_kick.notify_one();
        }
    }

    /// Resolves when [`Self::jwks_kick`] asked for a refetch.
    pub(crate) async fn jwks_kicked(&self) {
        self.jwks_kick.notified().await;
    }

    /// Marks a request in flight until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Records that the proxy listener accepts connections.
    pub(crate) fn set_listener_up(&self) {
        self.listener_up.store(true, Ordering::Release);
    }

    /// Starts refusing readiness (shutdown begun).
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// `/readyz`: listener up, not draining, the revocation view known (read from Redis
    /// once, or from a whole state file: docs/reference.md#partial-failures), every
    /// revocation and learned org written to its state file, and able to verify tokens if
    /// any route needs them.
    pub(crate) fn ready(&self) -> bool {
        if !self.listener_up.load(Ordering::Acquire) || self.draining() || !self.revocations.known() {
            return false;
        }
        if !self.revocations.durable() || !self.journal.durable() {
            return false;
        }
        let needs_keys = self.settings.fixed.routes.iter().any(|r| {
            matches!(
                r.auth,
                crate::policy::routes::AuthKind::Partner | crate::policy::routes::AuthKind::Org
            )
        });
        !needs_keys || !self.snapshot.load().keys.is_empty()
    }
}
