//! What a failed Redis command says about its connection, and how loudly to say so.
//!
//! A connection that timed out, or whose server is loading, out of memory or demoted, is
//! thrown away for a new one to the configured address (docs/reference.md#redis): behind a
//! managed primary endpoint or Sentinel-managed DNS, a new connection is how a client
//! reaches the new primary. A demoted primary (`READONLY`, `MASTERDOWN`) or a failed probe
//! replaces every connection of the replica, the subscription included, because the old
//! subscription may still answer pings while it misses every new record.
//!
//! Only a connection-level failure or one of those server states makes a replica treat
//! Redis as down. A bad value in one key (`WRONGTYPE`, a bucket that is not a number: a
//! foreign value another program SET there) is that principal's problem: its request gets
//! `on_error`, the error is counted with `kind="bad_value"` and logged at most once a
//! minute naming the key, and every other principal keeps using Redis.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::{ErrorKind, RedisError};

use crate::metrics::RedisErrorKind;

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
    /// Anything else the server answered with (a script error).
    Other,
    /// One key holds a value of the wrong type, or not a number where one belongs.
    BadValue,
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
    pub(crate) const ALL: [Fault; 9] = [
        Fault::Timeout,
        Fault::Io,
        Fault::ReadOnly,
        Fault::Loading,
        Fault::MasterDown,
        Fault::Oom,
        Fault::Reply,
        Fault::Other,
        Fault::BadValue,
    ];

    /// Reads a client error: the server's error code first, then the transport.
    pub(crate) fn of(e: &RedisError) -> Fault {
        match e.code() {
            Some("READONLY") => return Fault::ReadOnly,
            Some("LOADING") => return Fault::Loading,
            Some("MASTERDOWN") => return Fault::MasterDown,
            Some("OOM") => return Fault::Oom,
            Some("WRONGTYPE") => return Fault::BadValue,
            _ => {}
        }
        if e.kind() == ErrorKind::Client {
            Fault::BadValue
        } else if e.is_timeout() {
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
            Fault::Reply | Fault::Other | Fault::BadValue => Replace::Nothing,
        }
    }

    /// Whether it says Redis cannot be relied on (the circuit opens): a connection-level
    /// failure or a server state that refuses every command. A reply that is an error
    /// about one command or one key is that request's problem only.
    pub(crate) fn opens_circuit(self) -> bool {
        match self {
            Fault::Timeout | Fault::Io | Fault::ReadOnly | Fault::Loading | Fault::MasterDown | Fault::Oom => true,
            Fault::Reply | Fault::Other | Fault::BadValue => false,
        }
    }

    /// The `kind` label of `authgate_redis_errors_total`.
    pub(crate) fn kind(self) -> RedisErrorKind {
        match self {
            Fault::Timeout => RedisErrorKind::Timeout,
            Fault::Io => RedisErrorKind::Connection,
            Fault::ReadOnly => RedisErrorKind::ReadOnly,
            Fault::Loading => RedisErrorKind::Loading,
            Fault::MasterDown => RedisErrorKind::MasterDown,
            Fault::Oom => RedisErrorKind::Oom,
            Fault::Reply => RedisErrorKind::UnexpectedReply,
            Fault::Other => RedisErrorKind::Error,
            Fault::BadValue => RedisErrorKind::BadValue,
        }
    }

    /// A short name for log lines.
    pub(crate) fn as_str(self) -> &'static str {
        self.kind().as_str()
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
            Fault::BadValue => 8,
        }
    }

    /// Least time between two log lines of this fault: a bad value is logged at most once
    /// a minute (every request of its principal meets it), the rest at most once a second.
    fn log_every_ms(self) -> u64 {
        match self {
            Fault::BadValue => 60_000,
            _ => 1000,
        }
    }
}

/// A reply that is not what the command answers: an error (the caller's `on_error`
/// applies), never a default value that could read as a grant.
pub(crate) fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::UnexpectedReturnType, what))
}

/// The error of a command that met a bad value in `key` (read as [`Fault::BadValue`]); the
/// key is in its text, for the log line.
pub(crate) fn bad_value(key: &str) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "a value of the wrong type, or not a number, in key",
        key.to_string(),
    ))
}

/// `e`, read as a bad value in `key` when the server said `WRONGTYPE` (the error names no
/// key by itself).
pub(crate) fn naming_key(e: RedisError, key: &str) -> RedisError {
    if e.code() == Some("WRONGTYPE") {
        bad_value(key)
    } else {
        e
    }
}

/// Lets each kind of fault be logged at most once per second (a bad value once a minute),
/// however often it happens (a Redis that refuses writes fails every attempt; the log must
/// not become the load).
pub(crate) struct LogLimiter {
    /// Per fault: milliseconds (of the caller's clock) of the last line written, + 1.
    last: [AtomicU64; 9],
    /// Per fault: occurrences not logged since that line.
    quiet: [AtomicU64; 9],
}

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
        let due = last == 0 || now_ms.saturating_sub(last - 1) >= fault.log_every_ms();
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
                Fault::BadValue,
            ),
            (b"-ERR Error running script\r\n", Fault::Other),
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
        assert_eq!(Fault::of(&bad_value("ag:rl:{partner:acme}:30:4:tiny")), Fault::BadValue);
        assert!(bad_value("ag:k").to_string().contains("ag:k"), "the key is in the text");
    }

    #[test]
    fn only_connection_failures_and_server_states_open_the_circuit() {
        for f in Fault::ALL {
            let opens = matches!(
                f,
                Fault::Timeout | Fault::Io | Fault::ReadOnly | Fault::Loading | Fault::MasterDown | Fault::Oom
            );
            assert_eq!(f.opens_circuit(), opens, "{f:?}");
            if !opens {
                assert_eq!(f.replaces(), Replace::Nothing, "{f:?} keeps its connection");
            }
        }
        let wrongtype = match redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n") {
            Ok(redis::Value::ServerError(e)) => RedisError::from(e),
            other => panic!("{other:?}"),
        };
        let named = naming_key(wrongtype, "ag:orgs:acme");
        assert_eq!(Fault::of(&named), Fault::BadValue);
        assert!(named.to_string().contains("ag:orgs:acme"));
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
        // a bad value: once a minute
        assert_eq!(l.admit(Fault::BadValue, 0), Some(0));
        assert_eq!(l.admit(Fault::BadValue, 59_999), None);
        assert_eq!(l.admit(Fault::BadValue, 60_000), Some(1));
    }
}
