//! This replica's view of the shared revocations (docs/reference.md#partial-failures): the
//! records it has seen, the state file that keeps them across restarts, and how far it can
//! trust that view right now.
//!
//! A record is `(kind, id, key_id) -> {revoked, at}`; the newest `at` wins everywhere, so
//! an `unrevoke` is a record too and a replica that was away cannot resurrect a revocation
//! that was taken back. Every record stored in Redis also gets a sequence number within the
//! store's *epoch* (a value Redis holds; a Redis that lost its data gets a new one); a
//! replica tracks the highest number up to which it has applied every record of the epoch
//! and written it to its state file (its *watermark*), announces both, and
//! `authgate revoke --wait` compares them with its record's.
//!
//! Records arrive in batches (a full read, or every message the subscription has queued):
//! each batch is put in force record by record (O(1) each, [`Revocations::set`]) and written
//! with one append and one fsync. A batch the state file did not take stays in force (never
//! fail open) but is not announced: the replica is not ready, and under `on_error = "deny"`
//! refuses authenticating requests, until a retry has written it.
//!
//! The view is *known* once it came from Redis or from a state file, and *fresh* at T when
//! every record published before T has been applied: a full read confirms the moment it was
//! sent, a ping on the subscription the moment it was sent, once the messages queued ahead
//! of its answer are applied. A state file that is damaged is set aside and the view starts
//! unknown, as with no file at all.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::config::settings::OnError;
use crate::metrics::RedisMetrics;
use crate::policy::principal::{Principal, PrincipalKind};
use crate::policy::revocations::Revocations;
use crate::state_file::{checked_line, checked_lines, set_aside, AppendError, AppendFile, Damage, Throttle};

/// The first line of every revocation state file this version writes.
pub(crate) const HEADER: &str = "authgate revocations v2";

/// One revocation or its withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) kind: Kind,
    pub(crate) id: String,
    pub(crate) key_id: String,
    pub(crate) revoked: bool,
    /// Milliseconds since the Unix epoch; the newest record of a key wins.
    pub(crate) at: u64,
}

/// Serialisable principal kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Partner,
    Org,
}

impl From<PrincipalKind> for Kind {
    fn from(k: PrincipalKind) -> Kind {
        match k {
            PrincipalKind::Partner => Kind::Partner,
            PrincipalKind::Org => Kind::Org,
        }
    }
}

/// Identifies the key a record is about.
pub(crate) type RecordKey = (Kind, String, String);

impl Record {
    /// A record for `principal`'s `key_id`, now.
    pub(crate) fn new(principal: &Principal, key_id: &str, revoked: bool) -> Record {
        Record {
            kind: principal.kind().into(),
            id: principal.id().to_string(),
            key_id: key_id.to_string(),
            revoked,
            at: now_ms(),
        }
    }

    /// Which key the record is about.
    pub(crate) fn key(&self) -> RecordKey {
        (self.kind, self.id.clone(), self.key_id.clone())
    }

    /// The hash field: a JSON array, so no two keys can spell the same field.
    pub(crate) fn field(&self) -> String {
        serde_json::to_string(&(self.kind, &self.id, &self.key_id)).unwrap_or_default()
    }

    fn principal(&self) -> Principal {
        match self.kind {
            Kind::Partner => Principal::partner(self.id.as_str()),
            Kind::Org => Principal::org(self.id.as_str()),
        }
    }

    /// How operators read it in logs and CLI output.
    pub(crate) fn describe(&self) -> String {
        let kind = match self.kind {
            Kind::Partner => "partner",
            Kind::Org => "org",
        };
        format!("{kind} {:?} key {:?}", self.id, self.key_id)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The records of a state file's bytes, newest per key, and how many record lines it had;
/// or where it is damaged (any line that is not what the gateway wrote).
pub(crate) fn read_state(data: &[u8]) -> Result<(HashMap<RecordKey, Record>, usize), Damage> {
    let payloads = checked_lines(data, HEADER)?;
    let mut records: HashMap<RecordKey, Record> = HashMap::with_capacity(payloads.len());
    for (i, payload) in payloads.iter().enumerate() {
        let r: Record = serde_json::from_slice(payload).map_err(|_| Damage {
            line: i + 2,
            what: "the line is not a revocation record",
        })?;
        if records.get(&r.key()).is_none_or(|old| old.at < r.at) {
            records.insert(r.key(), r);
        }
    }
    Ok((records, payloads.len()))
}

/// Whether the state file at `path` is damaged (`authgate check`): `None` when it is
/// whole or missing.
pub(crate) fn inspect(path: &Path) -> io::Result<Option<Damage>> {
    match std::fs::read(path) {
        Ok(data) => Ok(read_state(&data).err()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The lines of `records`, each checked.
fn lines_of<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in records {
        if let Ok(json) = serde_json::to_vec(r) {
            buf.extend_from_slice(&checked_line(&json));
        }
    }
    buf
}

/// What the view holds under its lock.
struct State {
    records: HashMap<RecordKey, Record>,
    file: AppendFile,
    /// In force but not yet in the state file (retried).
    unwritten: Vec<Record>,
    /// The Redis epoch the numbers below count in (`None`: never read from Redis).
    epoch: Option<String>,
    /// Every record of `epoch` up to this number is in force.
    seen: u64,
    /// ... and in the state file: what the replica announces.
    acked: u64,
}

/// One published record: the epoch and number Redis gave it.
pub(crate) struct Published {
    pub(crate) epoch: String,
    pub(crate) seq: u64,
    pub(crate) record: Record,
}

/// The revocation view of one replica (see the module doc).
pub(crate) struct RevocationView {
    state: Mutex<State>,
    in_force: Revocations,
    known: AtomicBool,
    /// No record in force is missing from the state file.
    durable: AtomicBool,
    /// Milliseconds after `origin` (+1) of the last moment the view was known complete.
    fresh_at: AtomicU64,
    origin: Instant,
    /// `None` without `[redis]`: nothing but the state file can change the view then.
    max_age: Option<Duration>,
    metrics: Option<RedisMetrics>,
    /// `authgate_state_write_failures_total{file="revocations"}`.
    write_failures: IntCounter,
    logs: Throttle,
}

mod open;
mod write;

impl RevocationView {
    /// The revocations in force now.
    pub(crate) fn revocations(&self) -> &Revocations {
        &self.in_force
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the view came from Redis or a whole state file (until then, `/readyz` is 503
    /// and authenticating routes answer 503: deciding on nothing would fail open).
    pub(crate) fn known(&self) -> bool {
        self.known.load(Ordering::Acquire)
    }

    /// Whether every record in force is also in the state file (else `/readyz` is 503).
    pub(crate) fn durable(&self) -> bool {
        self.durable.load(Ordering::Acquire)
    }

    /// Whether a request on an authenticating route may be decided on this view: it must be
    /// known, and under `on_error = "deny"` fresh and written down.
    pub(crate) fn usable(&self, on_error: OnError) -> bool {
        let Some(max_age) = self.max_age else {
            return true;
        };
        if !self.known() {
            return false;
        }
        on_error == OnError::Local || (self.durable() && self.age().is_some_and(|a| a <= max_age))
    }

    /// How old the view may be: since it was last known complete (`None`: never, this run).
    pub(crate) fn age(&self) -> Option<Duration> {
        match self.fresh_at.load(Ordering::Acquire) {
            0 => None,
            t => Some(self.origin.elapsed().saturating_sub(Duration::from_millis(t - 1))),
        }
    }

    /// Records that the view was complete at `at`: a full read was sent then, or a ping on
    /// a subscription that followed a full read was, and every message received before its
    /// answer has been applied.
    pub(crate) fn confirm(&self, at: Instant) {
        let ms = u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.fresh_at.fetch_max(ms, Ordering::AcqRel);
        self.known.store(true, Ordering::Release);
    }

    /// What this replica announces: the epoch and the number up to which every record of
    /// it is applied and written down.
    pub(crate) fn announced(&self) -> (Option<String>, u64) {
        let s = self.lock();
        (s.epoch.clone(), s.acked)
    }

    /// Every record this replica has seen (to write back what Redis lost).
    pub(crate) fn records(&self) -> Vec<Record> {
        self.lock().records.values().cloned().collect()
    }

    /// Updates the count and age gauges (the age is read at scrape time).
    pub(crate) fn publish_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.revocations
                .set(i64::try_from(self.in_force.len()).unwrap_or(i64::MAX));
            // never read: as old as the process, so an alert sees it grow
            let age = self.age().unwrap_or_else(|| self.origin.elapsed());
            m.revocations_age.set(age.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests;
