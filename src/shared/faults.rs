//! What a failed Redis command says about its connection, and how loudly to say so.
//!
//! A connection that timed out, or whose server is loading, out of memory or demoted, is
//! thrown away for a new one to the configured address (docs/reference.md#redis): behind a
//! managed primary endpoint or Sentinel-managed DNS, a new connection is how a client
//! reaches the new primary. A demoted primary (`READONLY`, `MASTERDOWN`) or a failed probe
//! replaces every connection of the replica, the subscription included, because the old
//! subscription may still answer pings while it misses every new record.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::{ErrorKind, RedisError};

/// Why a command failed, as far as the connection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// No answer within the time bound: the path may be dead without a FIN or RST.
    Timeout,
    /// The connection broke (reset, closed, refused).
    Io,
    /// The server is a replica now (a failover demoted it).
    ReadOnly,
    /// The server is loading its dataset.
    Loading,
    /// A replica that lost its primary and serves nothing.
    MasterDown,
    /// `maxmemory` reached with `noeviction`: writes are refused.
    Oom,
    /// A reply of a type the command never answers with.
    Reply,
    /// Anything else the server answered with (a script error, a wrong type).
    Other,
}

/// Which connections a fault replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    /// Keep the connection: the server answered and the answer was the problem.
    Nothing,
    /// The connection the command ran on.
    This,
    /// Every connection of the replica, the subscription included.
    All,
}

impl Fault {
    /// Every fault, in [`Fault::index`] order.
    #[cfg(test)]
    pub(crate) const ALL: [Fault; 8] = [
        Fault::Timeout,
        Fault::Io,
        Fault::ReadOnly,
        Fault::Loading,
        Fault::MasterDown,
        Fault::Oom,
        Fault::Reply,
        Fault::Other,
    ];

    /// Reads a client error: the server's error code first, then the transport.
    pub(crate) fn of(e: &RedisError) -> Fault {
        match e.code() {
            Some("READONLY") => return Fault::ReadOnly,
            Some("LOADING") => return Fault::Loading,
            Some("MASTERDOWN") => return Fault::MasterDown,
            Some("OOM") => return Fault::Oom,
            _ => {}
        }
        if e.is_timeout() {
            Fault::Timeout
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            Fault::Io
        } else if matches!(e.kind(), ErrorKind::UnexpectedReturnType | ErrorKind::Parse) {
            Fault::Reply
        } else {
            Fault::Other
        }
    }

    /// The connections this fault replaces (docs/reference.md#redis).
    pub(crate) fn replaces(self) -> Replace {
        match self {
            Fault::ReadOnly | Fault::MasterDown => Replace::All,
            Fault::Timeout | Fault::Io | Fault::Loading | Fault::Oom => Replace::This,
            Fault::Reply | Fault::Other => Replace::Nothing,
        }
    }

    /// A short name for log lines.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fault::Timeout => "timeout",
            Fault::Io => "connection",
            Fault::ReadOnly => "readonly",
            Fault::Loading => "loading",
            Fault::MasterDown => "masterdown",
            Fault::Oom => "oom",
            Fault::Reply => "unexpected_reply",
            Fault::Other => "error",
        }
    }

    fn index(self) -> usize {
        match self {
            Fault::Timeout => 0,
            Fault::Io => 1,
            Fault::ReadOnly => 2,
            Fault::Loading => 3,
            Fault::MasterDown => 4,
            Fault::Oom => 5,
            Fault::Reply => 6,
            Fault::Other => 7,
        }
    }
}

/// A reply that is not what the command answers: an error (the caller's `on_error`
/// applies), never a default value that could read as a grant.
pub(crate) fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::UnexpectedReturnType, what))
}

/// Lets each kind of fault be logged at most once per second, however often it happens
/// (a Redis that refuses writes fails every attempt; the log must not become the load).
pub(crate) struct LogLimiter {
    /// Per fault: milliseconds (of the caller's clock) of the last line written, + 1.
    last: [AtomicU64; 8],
    /// Per fault: occurrences not logged since that line.
    quiet: [AtomicU64; 8],
}

/// Least time between two log lines of one fault kind.
const LOG_EVERY_MS: u64 = 1000;

impl LogLimiter {
    /// Nothing logged yet.
    pub(crate) fn new() -> LogLimiter {
        LogLimiter {
            last: Default::default(),
            quiet: Default::default(),
        }
    }

    /// Whether a line for `fault` may be written at `now_ms`; `Some(n)` with how many
    /// occurrences went unlogged since the last line.
    pub(crate) fn admit(&self, fault: Fault, now_ms: u64) -> Option<u64> {
        let i = fault.index();
        let last = self.last[i].load(Ordering::Acquire);
        let due = last == 0 || now_ms.saturating_sub(last - 1) >= LOG_EVERY_MS;
        if due
            && self.last[i]
                .compare_exchange(last, now_ms + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.quiet[i].swap(0, Ordering::AcqRel));
        }
        self.quiet[i].fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_and_transport_failures_say_what_to_replace() {
        // the client reads the code from the server's error line
        let parsed = redis::parse_redis_value(b"-READONLY You can't write against a read only replica.\r\n");
        let err = match parsed {
            Ok(redis::Value::ServerError(e)) => RedisError::from(e),
            other => panic!("{other:?}"),
        };
        assert_eq!(Fault::of(&err), Fault::ReadOnly);
        for (line, fault) in [
            (
                &b"-LOADING Redis is loading the dataset in memory\r\n"[..],
                Fault::Loading,
            ),
            (b"-MASTERDOWN Link with MASTER is down\r\n", Fault::MasterDown),
            (
                b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
                Fault::Oom,
            ),
            (
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                Fault::Other,
            ),
        ] {
            let e = match redis::parse_redis_value(line) {
                Ok(redis::Value::ServerError(e)) => RedisError::from(e),
                other => panic!("{other:?}"),
            };
            assert_eq!(Fault::of(&e), fault, "{}", String::from_utf8_lossy(line));
        }
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Fault::of(&io), Fault::Io);
        assert_eq!(Fault::of(&unexpected("not an integer")), Fault::Reply);

        assert_eq!(Fault::ReadOnly.replaces(), Replace::All);
        assert_eq!(Fault::MasterDown.replaces(), Replace::All);
        for f in [Fault::Timeout, Fault::Io, Fault::Loading, Fault::Oom] {
            assert_eq!(f.replaces(), Replace::This, "{f:?}");
        }
        assert_eq!(Fault::Reply.replaces(), Replace::Nothing);
        for (i, f) in Fault::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
    }

    #[test]
    fn each_fault_kind_is_logged_at_most_once_a_second() {
        let l = LogLimiter::new();
        assert_eq!(l.admit(Fault::Oom, 0), Some(0));
        for t in 1..1000 {
            assert_eq!(l.admit(Fault::Oom, t), None, "at {t} ms");
        }
        // another kind has its own budget
        assert_eq!(l.admit(Fault::Timeout, 500), Some(0));
        assert_eq!(l.admit(Fault::Oom, 1000), Some(999), "reports what it kept quiet");
        assert_eq!(l.admit(Fault::Oom, 1500), None);
        assert_eq!(l.admit(Fault::Oom, 2001), Some(1));
    }
}
