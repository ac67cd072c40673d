//! This replica's view of the shared revocations (docs/reference.md#redis): the records it
//! has seen, the state file that keeps them across restarts, and how far it can trust that
//! view right now.
//!
//! A record is `(kind, id, key_id) -> {revoked, at}`; the newest `at` wins everywhere, so
//! an `unrevoke` is a record too and a replica that was away cannot resurrect a revocation
//! that was taken back. Every record stored in Redis also gets a sequence number; a replica
//! tracks the highest number up to which it has applied every record (its *watermark*),
//! announces it, and `authgate revoke --wait` compares it with the number of its record.
//!
//! The view is *known* once it came from Redis or from a state file, and *fresh* while the
//! subscription is live (a ping answered within the last second or so) or the last full
//! read is younger than `revocations_max_age`. Requests on authenticating routes need a
//! known view, and under `on_error = "deny"` a fresh one.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::config::settings::OnError;
use crate::metrics::RedisMetrics;
use crate::policy::principal::{Principal, PrincipalKind};
use crate::policy::revocations::Revocations;
use crate::state_file::{read_all, AppendFile};

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

/// The revocations a set of records puts in force.
fn revocations_of<'a>(records: impl Iterator<Item = &'a Record>) -> Revocations {
    records.filter(|r| r.revoked).fold(Revocations::default(), |acc, r| {
        acc.with(&r.principal(), &r.key_id, true)
    })
}

/// The records of a state file, newest per key; how many lines it had.
fn read_records(data: &[u8], path: &Path) -> (HashMap<RecordKey, Record>, usize) {
    let mut records: HashMap<RecordKey, Record> = HashMap::new();
    let mut lines = 0usize;
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        lines += 1;
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => {
                if records.get(&r.key()).is_none_or(|old| old.at < r.at) {
                    records.insert(r.key(), r);
                }
            }
            Err(_) => tracing::warn!(file = %path.display(), "skipping an unreadable revocation record"),
        }
    }
    (records, lines)
}

fn lines_of<'a>(records: impl Iterator<Item = &'a Record>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for r in records {
        buf.extend_from_slice(&serde_json::to_vec(r)?);
        buf.push(b'\n');
    }
    Ok(buf)
}

/// The revocation view of one replica (see the module doc).
pub(crate) struct RevocationView {
    records: Mutex<HashMap<RecordKey, Record>>,
    file: AppendFile,
    current: ArcSwap<Revocations>,
    /// Every record numbered up to this one has been applied.
    watermark: AtomicU64,
    known: AtomicBool,
    /// Milliseconds after `origin` (+1) of the last moment the view was known complete.
    fresh_at: AtomicU64,
    origin: Instant,
    /// `None` without `[redis]`: nothing but the state file can change the view then.
    max_age: Option<Duration>,
    metrics: Option<RedisMetrics>,
}

impl RevocationView {
    /// Reads (and compacts) the state file at `path`; a missing file is an empty state.
    /// A file that exists but cannot be read is an error: forgetting revocations would fail
    /// open. `max_age` is `[redis] revocations_max_age` (`None` without `[redis]`: the view
    /// is then always known and fresh, as nothing shared can be missing from it).
    pub(crate) fn open(
        path: &Path,
        max_age: Option<Duration>,
        metrics: Option<RedisMetrics>,
    ) -> io::Result<RevocationView> {
        let existed = path.exists();
        let (records, lines) = read_records(&read_all(path)?, path);
        let file = AppendFile::new(path);
        if lines > records.len() {
            file.replace(&lines_of(records.values())?)?;
        }
        let current = revocations_of(records.values());
        if !current.is_empty() {
            tracing::info!(file = %path.display(), revoked = current.len(), "revocations applied from the state file");
        }
        let view = RevocationView {
            records: Mutex::new(records),
            file,
            current: ArcSwap::from_pointee(current),
            watermark: AtomicU64::new(0),
            known: AtomicBool::new(existed || max_age.is_none()),
            fresh_at: AtomicU64::new(0),
            origin: Instant::now(),
            max_age,
            metrics,
        };
        view.publish_gauges();
        Ok(view)
    }

    /// The revocations in force now (one consistent set per request).
    pub(crate) fn current(&self) -> Arc<Revocations> {
        self.current.load_full()
    }

    /// Whether the view came from Redis or a state file (until then, `/readyz` is 503 and
    /// authenticating routes answer 503: deciding on nothing would fail open).
    pub(crate) fn known(&self) -> bool {
        self.known.load(Ordering::Acquire)
    }

    /// Whether a request on an authenticating route may be decided on this view: it must be
    /// known, and under `on_error = "deny"` fresh.
    pub(crate) fn usable(&self, on_error: OnError) -> bool {
        let Some(max_age) = self.max_age else {
            return true;
        };
        if !self.known.load(Ordering::Acquire) {
            return false;
        }
        on_error == OnError::Local || self.age().is_some_and(|a| a <= max_age)
    }

    /// How old the view may be: since it was last known complete (`None`: never, this run).
    pub(crate) fn age(&self) -> Option<Duration> {
        match self.fresh_at.load(Ordering::Acquire) {
            0 => None,
            t => Some(self.origin.elapsed().saturating_sub(Duration::from_millis(t - 1))),
        }
    }

    /// Records that the view was complete at `at` (a full read sent then, or a ping on a
    /// subscription that followed a full read answered).
    pub(crate) fn confirm(&self, at: Instant) {
        let ms = u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.fresh_at.fetch_max(ms, Ordering::AcqRel);
        self.known.store(true, Ordering::Release);
    }

    /// The record numbers this replica has applied without a gap.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
    }

    /// A full read saw every record up to `seq`.
    pub(crate) fn settle(&self, seq: u64) {
        self.watermark.fetch_max(seq, Ordering::AcqRel);
    }

    /// A published record numbered `seq` was applied; `false` when records before it were
    /// not seen (the caller then reads the whole set).
    pub(crate) fn advance(&self, seq: u64) -> bool {
        let mut cur = self.watermark.load(Ordering::Acquire);
        loop {
            if seq <= cur {
                return true;
            }
            if seq != cur + 1 {
                return false;
            }
            match self
                .watermark
                .compare_exchange(cur, seq, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Applies a record seen anywhere (pub/sub, the hash): persisted (fsync) and put in
    /// force when it is newer than what is known about its key.
    pub(crate) fn apply(&self, r: Record) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.get(&r.key()).is_some_and(|old| old.at >= r.at) {
            return;
        }
        let what = r.describe();
        let revoked = r.revoked;
        match lines_of(std::iter::once(&r)).and_then(|line| self.file.append(&line)) {
            Ok(()) => {}
            Err(e) => tracing::error!(file = %self.file.path().display(), "revocation not persisted locally: {e}"),
        }
        records.insert(r.key(), r);
        self.current.store(Arc::new(revocations_of(records.values())));
        drop(records);
        self.publish_gauges();
        tracing::info!("{} {what}", if revoked { "revoked" } else { "revocation taken back:" });
    }

    /// Makes sure the state file exists once the view came from Redis, so a restart while
    /// Redis is away starts from it (and is ready) instead of from nothing.
    pub(crate) fn keep_file(&self) {
        if !self.file.path().exists() {
            if let Err(e) = self.file.open_now() {
                tracing::error!(file = %self.file.path().display(), "cannot create the revocation state file: {e}");
            }
        }
    }

    /// Every record this replica has seen (to write back what Redis lost).
    pub(crate) fn records(&self) -> Vec<Record> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.values().cloned().collect()
    }

    /// Updates the count and age gauges (the age is read at scrape time).
    pub(crate) fn publish_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.revocations
                .set(i64::try_from(self.current.load().len()).unwrap_or(i64::MAX));
            // never read: as old as the process, so an alert sees it grow
            let age = self.age().unwrap_or_else(|| self.origin.elapsed());
            m.revocations_age.set(age.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("authgate-view-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn the_newest_record_wins_and_survives_a_restart() {
        let path = tmp("restart");
        let view = RevocationView::open(&path, Some(Duration::from_secs(5)), None).unwrap();
        assert!(view.current().is_empty());
        let p = Principal::partner("acme");
        let mut r = Record::new(&p, "k1", true);
        r.at = 10;
        view.apply(r.clone());
        assert!(view.current().contains(PrincipalKind::Partner, "acme", "k1"));
        view.apply(r.clone());
        let mut older = Record::new(&p, "k1", false);
        older.at = 5;
        view.apply(older);
        assert!(
            view.current().contains(PrincipalKind::Partner, "acme", "k1"),
            "an older withdrawal loses"
        );
        drop(view);
        let view = RevocationView::open(&path, Some(Duration::from_secs(5)), None).unwrap();
        assert!(
            view.current().contains(PrincipalKind::Partner, "acme", "k1"),
            "applied at start"
        );
        let mut back = Record::new(&p, "k1", false);
        back.at = 11;
        view.apply(back);
        assert!(view.current().is_empty());
        drop(view);
        let view = RevocationView::open(&path, Some(Duration::from_secs(5)), None).unwrap();
        assert!(view.current().is_empty());
        // compacted to one line per key
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        drop(view);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn fields_are_unambiguous() {
        let a = Record::new(&Principal::partner("a\",\"b"), "c", true).field();
        let b = Record::new(&Principal::partner("a"), "b\",\"c", true).field();
        assert_ne!(a, b);
        assert_ne!(
            Record::new(&Principal::partner("x"), "k", true).field(),
            Record::new(&Principal::org("x"), "k", true).field()
        );
    }

    #[test]
    fn a_view_is_usable_once_known_and_under_deny_only_while_fresh() {
        let path = tmp("fresh");
        let view = RevocationView::open(&path, Some(Duration::from_secs(5)), None).unwrap();
        // no state file, never read from Redis: nothing may be decided on it
        assert!(!view.usable(OnError::Local));
        assert!(!view.usable(OnError::Deny));
        assert_eq!(view.age(), None);
        view.confirm(Instant::now());
        assert!(view.usable(OnError::Local) && view.usable(OnError::Deny));
        view.keep_file();
        assert!(path.exists());
        // a confirmation from long ago: stale, which only deny refuses
        let stale = RevocationView::open(&path, Some(Duration::from_secs(5)), None).unwrap();
        assert!(stale.usable(OnError::Local), "a state file makes the view known");
        assert!(!stale.usable(OnError::Deny), "but not fresh");
        // without [redis] there is nothing shared to miss
        let embedded = RevocationView::open(&tmp("embedded"), None, None).unwrap();
        assert!(embedded.usable(OnError::Deny));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_watermark_advances_only_without_gaps() {
        let view = RevocationView::open(&tmp("watermark"), Some(Duration::from_secs(5)), None).unwrap();
        assert!(view.advance(1));
        assert!(view.advance(2));
        assert!(view.advance(2), "seen before");
        assert!(!view.advance(4), "3 is missing");
        assert_eq!(view.watermark(), 2);
        view.settle(4);
        assert_eq!(view.watermark(), 4);
        view.settle(3);
        assert_eq!(view.watermark(), 4, "an older full read never lowers it");
    }
}
