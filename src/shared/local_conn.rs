//! One Redis connection per proxy worker thread, for the commands a request waits on.
//!
//! redis-rs's multiplexed connection hands every command to a driver task that lives on the
//! runtime which opened the connection. Through the process-wide `ConnectionManager` (opened
//! on the `authgate-redis` thread) each request's command therefore crosses threads twice,
//! a futex wake each way, which cost more CPU than the Redis round trip itself. Each worker
//! (pingora runs one current-thread runtime per worker) opens its own connection lazily, in
//! the background; until it is ready, and after it failed, commands use the manager, so
//! nothing ever waits on a connect.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How long a worker uses the manager after its own connection could not be opened.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The connection one command runs on.
#[derive(Clone)]
pub(crate) enum Conn {
    /// The process-wide connection, which reconnects by itself (housekeeping, the CLI, and
    /// requests while the worker's own connection is not ready).
    Manager(ConnectionManager),
    /// This worker thread's own connection.
    Local(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Local(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Local(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Local(c) => c.get_db(),
        }
    }
}

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
    /// The circuit generation it was opened in: a connection from before Redis went down
    /// is never reused after it came back.
    generation: u64,
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
    /// Use the manager for now.
    Wait,
}

/// This thread's connection for `owner` in `generation`, claiming the right to open one
/// when there is none (or only a stale or failed one whose back-off has passed).
pub(crate) fn lookup(owner: u64, generation: u64) -> Lookup {
    LOCAL.with(|cell| {
        let mut entries = cell.borrow_mut();
        let Some(e) = entries.iter_mut().find(|e| e.owner == owner) else {
            entries.push(Entry {
                owner,
                generation,
                slot: Slot::Connecting,
            });
            return Lookup::Open;
        };
        if e.generation != generation {
            e.generation = generation;
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
/// generation took the slot meanwhile.
pub(crate) fn opened(owner: u64, generation: u64, conn: Option<MultiplexedConnection>) {
    LOCAL.with(|cell| {
        let mut entries = cell.borrow_mut();
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.owner == owner && e.generation == generation)
        {
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
    fn a_failed_open_backs_off_and_a_new_generation_reopens() {
        assert!(matches!(lookup(201, 1), Lookup::Open));
        opened(201, 1, None);
        assert!(matches!(lookup(201, 1), Lookup::Wait));
        assert!(matches!(lookup(201, 2), Lookup::Open));
        // a late outcome of the old generation does not overwrite the new one
        opened(201, 1, None);
        assert!(matches!(lookup(201, 2), Lookup::Wait));
        forget(201);
        assert!(matches!(lookup(201, 2), Lookup::Wait));
    }
}
