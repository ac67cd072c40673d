//! One Redis connection per proxy worker thread, for the commands a request waits on.
//!
//! redis-rs's multiplexed connection hands every command to a driver task that lives on the
//! runtime which opened the connection. Through the housekeeping connection (opened on the
//! `authgate-redis` thread) each request's command would cross threads twice, a futex wake
//! each way, which cost more CPU than the Redis round trip itself. Each worker (pingora runs
//! one current-thread runtime per worker) opens its own connection lazily, in the
//! background; until it is ready, and after it failed, commands use the housekeeping one,
//! so nothing ever waits on a connect. A connection belongs to the epoch it was opened in:
//! when every connection is replaced (a demoted primary, a failed probe), the next command
//! on each worker opens a new one.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// How long a worker uses the manager after its own connection could not be opened.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where this thread's connection for one `Shared` stands.
enum Slot {
    /// Being opened by a background task.
    Connecting,
    /// Usable.
    Ready(MultiplexedConnection),
    /// Opening failed; do not try again before this instant.
    Failed(Instant),
}

struct Entry {
    /// Which `Shared` (tests run several in one process).
    owner: u64,
    /// The epoch it was opened in: a connection of an earlier epoch is never used again.
    epoch: u64,
    slot: Slot,
}

thread_local! {
    static LOCAL: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// What [`lookup`] found for this thread.
pub(crate) enum Lookup {
    /// Use this connection.
    Ready(MultiplexedConnection),
    /// None yet; the caller starts opening one (the slot is now `Connecting`).
    Open,
    /// Use the housekeeping connection for now.
    Wait,
}

/// This thread's connection for `owner` in `epoch`, claiming the right to open one
/// when there is none (or only a stale or failed one whose back-off has passed).
pub(crate) fn lookup(owner: u64, epoch: u64) -> Lookup {
    LOCAL.with(|cell| {
        let mut entries = cell.borrow_mut();
        let Some(e) = entries.iter_mut().find(|e| e.owner == owner) else {
            entries.push(Entry {
                owner,
                epoch,
                slot: Slot::Connecting,
            });
            return Lookup::Open;
        };
        if e.epoch != epoch {
            e.epoch = epoch;
            e.slot = Slot::Connecting;
            return Lookup::Open;
        }
        match &e.slot {
            Slot::Ready(c) => Lookup::Ready(c.clone()),
            Slot::Connecting => Lookup::Wait,
            Slot::Failed(until) if Instant::now() < *until => Lookup::Wait,
            Slot::Failed(_) => {
                e.slot = Slot::Connecting;
                Lookup::Open
            }
        }
    })
}

/// Records the outcome of opening (`None`: it failed) on this thread, unless a newer
/// epoch took the slot meanwhile.
pub(crate) fn opened(owner: u64, epoch: u64, conn: Option<MultiplexedConnection>) {
    LOCAL.with(|cell| {
        let mut entries = cell.borrow_mut();
        if let Some(e) = entries.iter_mut().find(|e| e.owner == owner && e.epoch == epoch) {
            e.slot = match conn {
                Some(c) => Slot::Ready(c),
                None => Slot::Failed(Instant::now() + RETRY_AFTER),
            };
        }
    })
}

/// Drops this thread's connection after a command on it failed; the next command opens a
/// new one (after the back-off).
pub(crate) fn forget(owner: u64) {
    LOCAL.with(|cell| {
        if let Some(e) = cell.borrow_mut().iter_mut().find(|e| e.owner == owner) {
            e.slot = Slot::Failed(Instant::now() + RETRY_AFTER);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_lookup_claims_the_open_and_later_ones_wait() {
        assert!(matches!(lookup(101, 1), Lookup::Open));
        assert!(matches!(lookup(101, 1), Lookup::Wait));
        // another Shared on the same thread has its own slot
        assert!(matches!(lookup(102, 1), Lookup::Open));
    }

    #[test]
    fn a_failed_open_backs_off_and_a_new_epoch_reopens() {
        assert!(matches!(lookup(201, 1), Lookup::Open));
        opened(201, 1, None);
        assert!(matches!(lookup(201, 1), Lookup::Wait));
        assert!(matches!(lookup(201, 2), Lookup::Open));
        // a late outcome of the old epoch does not overwrite the new one
        opened(201, 1, None);
        assert!(matches!(lookup(201, 2), Lookup::Wait));
        forget(201);
        assert!(matches!(lookup(201, 2), Lookup::Wait));
    }
}
