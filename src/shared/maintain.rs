//! The maintainer: keeps a replica's Redis connections trustworthy for the life of the
//! process. Once a second it announces the replica (a write, so it is also the probe: a
//! primary that answers PING but refuses writes, out of memory or demoted, fails it). A
//! failed probe replaces every connection and keeps the circuit open, retrying with a
//! bounded back-off (at most 10 attempts a second, at least one every 2 s); coming back up,
//! it first writes back what Redis may have lost (learned orgs, revocations). The same
//! happens whenever the announcement answers a store epoch this replica has not written
//! back to: Redis lost its data (a restart without persistence, a FLUSHALL), and every
//! replica writes back its own knowledge, each on its own (docs/reference.md#partial-failures).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::view::RevocationView;
use super::{orgs, revocations, Handles, Shared};

/// Shortest wait between two probes after a failure (10 attempts a second at most).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two probes, so a Redis that answers again is used within 2 s + one
/// probe.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a healthy replica probes and announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How often a healthy replica re-reads the shared revocations (besides pub/sub).
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// Up for this long without a failed command: the back-off starts over.
const STABLE: Duration = Duration::from_secs(2);
/// How often a state file that did not take a write is tried again.
const RETRY_WRITES_EVERY: Duration = Duration::from_millis(500);

/// Doubling back-off between [`MIN_BACKOFF`] and [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }

    fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }
}

/// Runs for the life of the process on the Redis runtime.
pub(super) async fn maintain(shared: Arc<Shared>, handles: Handles) {
    let mut backoff = Backoff(MIN_BACKOFF);
    let mut recovery = Recovery {
        written_back: None,
        next_sync: Instant::now() + RESYNC_EVERY,
    };
    loop {
        let (epoch, watermark) = handles.view.announced();
        let healthy = match shared.announce(epoch.as_deref(), watermark).await {
            Ok(store_epoch) => recovery.recover(&shared, &handles, &store_epoch).await,
            Err(_) => false,
        };
        if !healthy {
            // A failed probe replaces every connection: behind a failed-over address the
            // next ones reach the new primary.
            shared.replace_all();
            tokio::time::sleep(backoff.next()).await;
            continue;
        }
        let up_since = Instant::now();
        tokio::select! {
            _ = shared.trouble.notified() => {
                // a request's command failed: probe again after the back-off, which grows
                // while failures keep following recoveries (a Redis that refuses the
                // request's writes but not the probe's must not make us spin)
                if up_since.elapsed() >= STABLE {
                    backoff.reset();
                }
                tokio::time::sleep(backoff.next()).await;
            }
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => backoff.reset(),
        }
    }
}

/// Retries the revocation state file's writes for the life of the process (a full disk
/// that frees up, a volume remounted writable, a file deleted under the gateway), so the
/// replica is ready again without waiting for the next record.
pub(super) async fn keep_written(view: Arc<RevocationView>) {
    let mut tick = tokio::time::interval(RETRY_WRITES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        view.retry_writes();
    }
}

/// What the maintainer remembers between probes.
struct Recovery {
    /// The store epoch this replica last wrote its knowledge back to.
    written_back: Option<String>,
    /// When to re-read the revocations next while all is well.
    next_sync: Instant,
}

impl Recovery {
    /// After a successful probe that answered `store_epoch`: write back what Redis may have
    /// lost when it was away (coming up) or lost its data (an epoch this replica did not
    /// write back to), re-read revocations now and then, and admit requests to Redis again.
    /// `false` when a write-back failed (the circuit stays open).
    async fn recover(&mut self, shared: &Shared, handles: &Handles, store_epoch: &str) -> bool {
        let coming_up = !shared.up();
        let lost = self.written_back.as_deref() != Some(store_epoch);
        if coming_up || lost {
            if lost && self.written_back.is_some() {
                tracing::warn!(
                    "redis holds a new epoch: it lost its data (a restart without persistence, a flush); \
                     writing back this replica's learned orgs and revocations"
                );
            }
            // Write back before admitting requests to Redis again, so a restarted, empty
            // Redis never answers "not learned" / "not revoked" for long.
            if !orgs::push_all(shared, &handles.learned).await {
                return false;
            }
            let Some(synced) = revocations::sync(shared, &handles.view).await else {
                return false;
            };
            // a second loss between the probe and the read: write back again next round
            self.written_back = (synced == store_epoch).then_some(synced);
            self.next_sync = Instant::now() + RESYNC_EVERY;
        } else if Instant::now() >= self.next_sync {
            self.next_sync = Instant::now() + RESYNC_EVERY;
            // a failure here opens the circuit by itself; the next probe decides
            revocations::sync(shared, &handles.view).await;
        }
        shared.mark_up();
        true
    }
}
