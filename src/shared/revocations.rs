//! Revocations across replicas (docs/reference.md#shared-state-across-replicas): `authgate revoke` writes a record into one
//! Redis hash and publishes it; every replica applies published records at once, re-reads
//! the hash on (re)connect and every few seconds, and keeps every record it has seen in a
//! local state file that it applies at start, Redis or not. Revocations never fail open.
//!
//! A record is `(kind, id, key_id) -> {revoked, at}`; the newest `at` wins everywhere (in
//! the hash, through a merge script, and locally), so an `unrevoke` is a record too and a
//! replica that was away cannot resurrect a revocation that was taken back. Whatever Redis
//! lost (a restart without persistence), replicas write back from their state files.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{Op, Shared};
use crate::gateway::Gateway;
use crate::policy::principal::{Principal, PrincipalKind};
use crate::policy::revocations::Revocations;

/// Sets a hash field only when the stored record is older (by `at`); returns the record in
/// force. `KEYS[1]` the hash, `ARGV` field, record JSON, its `at`.
pub(crate) const MERGE_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' and tonumber(c.at) and tonumber(c.at) >= tonumber(ARGV[3]) then
    return cur
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
"#;

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
type RecordKey = (Kind, String, String);

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

    fn key(&self) -> RecordKey {
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The records a replica has seen, and the state file that keeps them across restarts.
pub(crate) struct RevocationState {
    path: PathBuf,
    records: Mutex<HashMap<RecordKey, Record>>,
    file: Mutex<Option<File>>,
}

impl RevocationState {
    /// Reads (and compacts) the state file; a missing file is an empty state. A file that
    /// exists but cannot be read is an error: forgetting revocations would fail open.
    pub(crate) fn open(path: &Path) -> io::Result<(RevocationState, Revocations)> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut records: HashMap<RecordKey, Record> = HashMap::new();
        let mut lines = 0usize;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => {
                    let newer = records.get(&r.key()).is_none_or(|old| old.at < r.at);
                    if newer {
                        records.insert(r.key(), r);
                    }
                }
                Err(_) => tracing::warn!(file = %path.display(), "skipping an unreadable revocation record"),
            }
        }
        if lines > records.len() {
            rewrite(path, records.values())?;
        }
        let revoked = revocations_of(records.values());
        if !records.is_empty() {
            tracing::info!(file = %path.display(), revoked = revoked.len(), "revocations applied from the state file");
        }
        Ok((
            RevocationState {
                path: path.to_path_buf(),
                records: Mutex::new(records),
                file: Mutex::new(None),
            },
            revoked,
        ))
    }

    /// Takes `r` if it is newer than what is known about its key; persists it (fsync) and
    /// returns the new revocation set to install, or `None` when nothing changed.
    fn take(&self, r: Record) -> Option<Revocations> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.get(&r.key()).is_some_and(|old| old.at >= r.at) {
            return None;
        }
        if let Err(e) = self.append(&r) {
            tracing::error!(file = %self.path.display(), "revocation not persisted locally: {e}");
        }
        records.insert(r.key(), r);
        Some(revocations_of(records.values()))
    }

    fn append(&self, r: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        let result = match guard.as_mut() {
            Some(f) => f.write_all(&line).and_then(|_| f.sync_data()),
            None => Err(io::Error::other("state file not open")),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }

    fn snapshot(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

fn revocations_of<'a>(records: impl Iterator<Item = &'a Record>) -> Revocations {
    records.filter(|r| r.revoked).fold(Revocations::default(), |acc, r| {
        acc.with(&r.principal(), &r.key_id, true)
    })
}

fn rewrite<'a>(path: &Path, records: impl Iterator<Item = &'a Record>) -> io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    {
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
        for r in records {
            let mut line = serde_json::to_vec(r)?;
            line.push(b'\n');
            f.write_all(&line)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Applies a record seen anywhere (pub/sub, the hash) to this replica.
pub(crate) fn apply(gw: &Gateway, r: Record) {
    let what = format!("{:?} {} key {}", r.kind, r.id, r.key_id);
    let revoked = r.revoked;
    if let Some(next) = gw.revocation_state.take(r) {
        gw.revoked.store(std::sync::Arc::new(next));
        gw.metrics.set_revocations(gw.revoked.load().len());
        tracing::info!("{} {what}", if revoked { "revoked" } else { "revocation taken back:" });
    }
}

impl Shared {
    fn revocations_key(&self) -> String {
        self.key("revocations")
    }

    /// Writes `r` unless the hash holds a newer record of its key; returns the record in
    /// force afterwards.
    pub(crate) async fn merge(&self, r: &Record) -> Option<Record> {
        let key = self.revocations_key();
        let field = r.field();
        let value = serde_json::to_string(r).ok()?;
        let at = r.at;
        let stored: String = self
            .run_unbounded(Op::Revocation, |mut c| async move {
                self.merge_script
                    .key(&key)
                    .arg(&field)
                    .arg(&value)
                    .arg(at)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        serde_json::from_str(&stored).ok()
    }

    /// Every record in the hash.
    async fn all(&self) -> Option<Vec<Record>> {
        let key = self.revocations_key();
        let raw: HashMap<String, String> = self
            .run_unbounded(Op::Revocation, |mut c| async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
            })
            .await?;
        Some(raw.values().filter_map(|v| serde_json::from_str(v).ok()).collect())
    }

    /// The current record of one key, if any.
    pub(crate) async fn current(&self, principal: &Principal, key_id: &str) -> Option<Option<Record>> {
        let key = self.revocations_key();
        let field = Record::new(principal, key_id, true).field();
        let raw: Option<String> = self
            .run_unbounded(Op::Revocation, |mut c| async move {
                redis::cmd("HGET").arg(&key).arg(&field).query_async(&mut c).await
            })
            .await?;
        Some(raw.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Tells every subscribed replica; returns how many received it.
    pub(crate) async fn publish(&self, r: &Record) -> Option<i64> {
        let channel = self.revocations_key();
        let message = serde_json::to_string(r).ok()?;
        self.run_unbounded(Op::Revocation, |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&message)
                .query_async(&mut c)
                .await
        })
        .await
    }
}

/// Both ways between the hash and this replica: newer records from Redis are applied here;
/// records Redis lacks (or holds older) are written back.
pub(crate) async fn sync(gw: &Gateway) {
    let Some(shared) = gw.shared.as_ref() else {
        return;
    };
    let Some(remote) = shared.all().await else {
        return;
    };
    let mut in_redis: HashMap<RecordKey, u64> = HashMap::new();
    for r in remote {
        in_redis.insert(r.key(), r.at);
        apply(gw, r);
    }
    let mut written_back = 0usize;
    for r in gw.revocation_state.snapshot() {
        if in_redis.get(&r.key()).is_none_or(|at| *at < r.at) {
            if shared.merge(&r).await.is_none() {
                return;
            }
            written_back += 1;
        }
    }
    if written_back > 0 {
        tracing::info!(records = written_back, "revocations written back to redis");
    }
}

/// Follows the revocation channel for the life of the process, resubscribing (and
/// re-reading the hash, so nothing published in between is missed) after any drop.
pub(crate) async fn subscribe(gw: std::sync::Arc<Gateway>) {
    let Some(shared) = gw.shared.as_ref() else {
        return;
    };
    let channel = shared.revocations_key();
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Some(mut pubsub) = shared.pubsub().await {
            if pubsub.subscribe(&channel).await.is_ok() {
                backoff = Duration::from_millis(50);
                sync(&gw).await;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    match msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|p| serde_json::from_str::<Record>(&p).ok())
                    {
                        Some(r) => apply(&gw, r),
                        None => tracing::warn!("unreadable revocation message ignored"),
                    }
                }
                tracing::warn!("revocation subscription dropped; resubscribing");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("authgate-revocations-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn the_newest_record_wins_and_survives_a_restart() {
        let path = tmp("restart");
        let (state, revoked) = RevocationState::open(&path).unwrap();
        assert!(revoked.is_empty());
        let p = Principal::partner("acme");
        let mut r = Record::new(&p, "k1", true);
        r.at = 10;
        let after = state.take(r.clone()).unwrap();
        assert!(after.contains(PrincipalKind::Partner, "acme", "k1"));
        assert!(state.take(r.clone()).is_none(), "same record twice changes nothing");
        let mut older = Record::new(&p, "k1", false);
        older.at = 5;
        assert!(state.take(older).is_none(), "an older withdrawal loses");
        drop(state);
        let (state, revoked) = RevocationState::open(&path).unwrap();
        assert!(
            revoked.contains(PrincipalKind::Partner, "acme", "k1"),
            "applied at start"
        );
        let mut back = Record::new(&p, "k1", false);
        back.at = 11;
        assert!(state.take(back).unwrap().is_empty());
        drop(state);
        let (_, revoked) = RevocationState::open(&path).unwrap();
        assert!(revoked.is_empty());
        // compacted to one line per key
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
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
}
