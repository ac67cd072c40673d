//! Putting records in force and into the state file: one append and one fsync per batch,
//! cut back and retried when the file does not take it.

use super::*;

/// Least time between two log lines about a state file that does not take writes (each
/// failed attempt is counted all the same).
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);

/// How many records of one batch are logged one by one (a burst gets a summary).
const LOGGED_ONE_BY_ONE: usize = 10;

impl RevocationView {
    /// A full read of the store: every record in it, with the epoch and the counter read at
    /// the same instant. Returns whether everything in force is written down.
    pub(crate) fn apply_read(&self, epoch: &str, seq: u64, records: Vec<Record>) -> bool {
        let mut s = self.lock();
        if s.epoch.as_deref() == Some(epoch) {
            s.seen = s.seen.max(seq);
        } else {
            // another epoch: numbers of the old one mean nothing in it
            s.epoch = Some(epoch.to_string());
            s.seen = seq;
            s.acked = 0;
        }
        self.put_in_force(&mut s, records)
    }

    /// Published records, in the order they were received. `false` when one shows that an
    /// earlier one was missed (another epoch, or a gap in the numbers): the caller then
    /// reads the whole set. Every record is put in force either way (the newest per key wins).
    pub(crate) fn apply_published(&self, batch: Vec<Published>) -> bool {
        let mut s = self.lock();
        let mut whole = true;
        let mut records = Vec::with_capacity(batch.len());
        for p in batch {
            if s.epoch.as_deref() != Some(p.epoch.as_str()) {
                whole = false;
            } else if p.seq == s.seen + 1 {
                s.seen = p.seq;
            } else if p.seq > s.seen {
                whole = false;
            }
            records.push(p.record);
        }
        self.put_in_force(&mut s, records);
        whole
    }

    /// Puts the records newer than what is known about their keys in force, then writes
    /// them down. Returns whether everything in force is written down.
    fn put_in_force(&self, s: &mut State, records: Vec<Record>) -> bool {
        let mut newer = Vec::new();
        for r in records {
            if s.records.get(&r.key()).is_some_and(|old| old.at >= r.at) {
                continue;
            }
            self.in_force.set(&r.principal(), &r.key_id, r.revoked);
            s.records.insert(r.key(), r.clone());
            newer.push(r);
        }
        log_applied(&newer);
        s.unwritten.extend(newer);
        let durable = self.write_down(s);
        self.publish_gauges();
        durable
    }

    /// Retries what the state file did not take, and rewrites a file deleted or replaced
    /// under the gateway (or never created: once the view came from Redis, a restart
    /// while Redis is away must find it). Runs every half second on the Redis runtime.
    pub(crate) fn retry_writes(&self) {
        let mut s = self.lock();
        if !s.unwritten.is_empty() || self.missing(&s) || s.file.moved() {
            self.write_down(&mut s);
        }
    }

    /// Whether the state file should exist and does not: once the view is known, with
    /// `[redis]` (a restart while Redis is away must find it).
    fn missing(&self, s: &State) -> bool {
        self.known() && self.max_age.is_some() && !s.file.path().exists()
    }

    /// Appends the unwritten records (or rewrites the whole file when it moved or is
    /// missing); on success the replica may announce everything it has seen.
    fn write_down(&self, s: &mut State) -> bool {
        let missing = self.missing(s);
        let attempt = if missing || s.file.moved() {
            Err(AppendError::Moved)
        } else if s.unwritten.is_empty() {
            Ok(())
        } else {
            s.file.append(&lines_of(s.unwritten.iter()))
        };
        let outcome = match attempt {
            Err(AppendError::Moved) => {
                if !missing {
                    self.note_failure(s, &AppendError::Moved);
                }
                s.file
                    .replace(&lines_of(s.records.values()))
                    .map_err(AppendError::Failed)
            }
            other => other,
        };
        match outcome {
            Ok(()) => {
                if !self.durable.swap(true, Ordering::AcqRel) {
                    tracing::info!(file = %s.file.path().display(), "revocation state file written again");
                }
                s.unwritten.clear();
                s.acked = s.seen;
                true
            }
            Err(e) => {
                self.note_failure(s, &e);
                self.durable.store(false, Ordering::Release);
                false
            }
        }
    }

    /// Counts a write the state file did not take, and logs it (at most every [`LOG_EVERY`]).
    fn note_failure(&self, s: &State, e: &AppendError) {
        self.write_failures.inc();
        if self.logs.due() {
            tracing::error!(
                file = %s.file.path().display(),
                unwritten = s.unwritten.len(),
                "revocation state file write failed ({e}): the revocations are in force but not \
                 announced; not ready (and 503 under on_error = deny) until a retry writes them"
            );
        }
    }
}

/// Logs what a batch changed: each record of a small batch, a count for a burst.
fn log_applied(records: &[Record]) {
    if records.len() <= LOGGED_ONE_BY_ONE {
        for r in records {
            let what = if r.revoked { "revoked" } else { "revocation taken back:" };
            tracing::info!("{what} {}", r.describe());
        }
    } else {
        let revoked = records.iter().filter(|r| r.revoked).count();
        tracing::info!(
            records = records.len(),
            revoked,
            taken_back = records.len() - revoked,
            "revocation records applied"
        );
    }
}
