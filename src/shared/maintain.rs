//! The maintainer: keeps a replica's Redis connections trustworthy for the life of the
//! process. Once a second it announces the replica (a write, so it is also the probe: a
//! primary that answers PING but refuses writes, out of memory or demoted, fails it). A
//! failed probe replaces every connection and keeps the circuit open, retrying with a
//! bounded back-off (at most 10 attempts a second, at least one every 2 s); coming back up,
//! it first writes back what Redis may have lost (learned orgs, revocations).

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let mut next_sync = Instant::now() + RESYNC_EVERY;
    loop {
        let healthy = match shared.announce(handles.view.watermark()).await {
            Ok(alive) => recover(&shared, &handles, alive, &mut next_sync).await,
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

/// After a successful probe: write back what Redis may have lost when it was away or lost
/// its data (the sentinel is gone), re-read revocations now and then, and admit requests to
/// Redis again. `false` when a write-back failed (the circuit stays open).
async fn recover(shared: &Shared, handles: &Handles, alive: bool, next_sync: &mut Instant) -> bool {
    let coming_up = !shared.up();
    if coming_up || !alive {
        // Write back before admitting requests to Redis again, so a restarted, empty Redis
        // never answers "not learned" / "not revoked" for long.
        if !orgs::push_all(shared, &handles.learned).await || !revocations::sync(shared, &handles.view).await {
            return false;
        }
        if !alive && !shared.set_sentinel().await {
            return false;
        }
        *next_sync = Instant::now() + RESYNC_EVERY;
    } else if Instant::now() >= *next_sync {
        *next_sync = Instant::now() + RESYNC_EVERY;
        // a failure here opens the circuit by itself; the next probe decides
        revocations::sync(shared, &handles.view).await;
    }
    shared.mark_up();
    true
}
