//! The learned-orgs journal (docs/reference.md#learned-orgs): one JSON line per learned org, appended and
//! fsynced before the create response completes, replayed and compacted at start.
//!
//! Appends run on one writer thread (`authgate-journal`), never on a proxy worker: the create
//! response that taught an org waits for its line, the worker does not. An append the file
//! does not take (a full disk, a read-only volume) is cut back to the last whole line,
//! counted, kept in memory and retried every half second; until it lands the gateway is
//! not ready. A journal deleted or replaced under the gateway is noticed and rewritten from
//! memory. A line that does not parse at start is reported with its line number, and the
//! file as it was is kept as `<name>.damaged-<unix seconds>` before it is compacted.
//!
//! Every writer (the gateway's appends, its start-up compaction, `authgate orgs import`)
//! holds an exclusive `flock` on a sidecar `<journal>.lock` file while it writes. The lock
//! lives on a file that is never renamed, so compaction (write a temp file, fsync, rename
//! over the journal) cannot pull the lock out from under another writer.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::policy::ownership::LearnedOrgs;
use crate::state_file::{keep_copy, read_all, AppendError, AppendFile, Throttle};

#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    partner: std::borrow::Cow<'a, str>,
    org: std::borrow::Cow<'a, str>,
}

/// What a journal's bytes say: the entries in order, and what was wrong with the rest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// (partner, org) pairs in file order, duplicates included.
    pub entries: Vec<(String, String)>,
    /// Complete lines that are not a journal entry (skipped, logged).
    pub unreadable: usize,
    /// Whether the last line has no newline (a write torn by a crash; never counted).
    pub torn_tail: bool,
    /// The first line (1-based) that is unreadable or the torn tail, if any.
    pub first_bad_line: Option<usize>,
}

/// Reads journal bytes. Never fails: a complete line that does not parse is skipped, and
/// an unterminated last line is a torn write and is dropped.
pub fn parse(data: &[u8]) -> Replay {
    let mut replay = Replay::default();
    for (i, line) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        let Some(body) = line.strip_suffix(b"\n") else {
            replay.torn_tail = true;
            replay.first_bad_line.get_or_insert(i + 1);
            break;
        };
        match serde_json::from_slice::<Entry<'_>>(body) {
            Ok(e) if !e.partner.is_empty() && !e.org.is_empty() => {
                replay.entries.push((e.partner.into_owned(), e.org.into_owned()))
            }
            _ => {
                replay.unreadable += 1;
                replay.first_bad_line.get_or_insert(i + 1);
            }
        }
    }
    replay
}

/// One journal line for an entry (newline included).
fn line(partner: &str, org: &str) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&Entry {
        partner: partner.into(),
        org: org.into(),
    })?;
    line.push(b'\n');
    Ok(line)
}

/// The sidecar lock file of a journal.
fn lock_path(journal: &Path) -> PathBuf {
    let mut s = journal.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// Holds the journal's writer lock until dropped.
struct WriterLock(File);

impl WriterLock {
    fn take(journal: &Path) -> io::Result<WriterLock> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(journal))?;
        f.lock()?;
        Ok(WriterLock(f))
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Rewrites the journal with each (partner, org) once (see [`crate::state_file::replace`]). Caller
/// holds the lock.
fn compact(file: &AppendFile, entries: &[(String, String)]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(entries.len() * 64);
    for (p, o) in entries {
        buf.extend_from_slice(&line(p, o)?);
    }
    file.replace(&buf)
}

/// Distinct entries, first occurrence order.
fn dedupe(entries: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut seen = HashSet::with_capacity(entries.len());
    entries.into_iter().filter(|e| seen.insert(e.clone())).collect()
}

/// Least time between two log lines about a journal that does not take writes.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often unwritten lines are retried, and the file checked for deletion or replacement.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Append-only journal of learned orgs.
pub struct Journal {
    file: AppendFile,
    /// Learned (in memory, in force) but not yet in the file: retried.
    unwritten: Mutex<Vec<(String, String)>>,
    durable: AtomicBool,
    /// `authgate_state_write_failures_total{file="learned_orgs"}`.
    failures: IntCounter,
    logs: Throttle,
}

/// One line for the writer thread, and who to tell when it landed (or did not, for now).
struct Job {
    partner: String,
    org: String,
    done: Box<dyn FnOnce(bool) + Send>,
}

/// Hands lines to the journal's writer thread.
pub(crate) struct JournalWriter {
    jobs: mpsc::Sender<Job>,
}

impl JournalWriter {
    /// Queues one line; `done` runs on the writer thread once it is on disk (`true`) or the
    /// append failed and will be retried (`false`).
    pub(crate) fn append(&self, partner: &str, org: &str, done: Box<dyn FnOnce(bool) + Send>) {
        let job = Job {
            partner: partner.to_string(),
            org: org.to_string(),
            done,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            (job.done)(false);
        }
    }
}

mod open;

impl Journal {
    /// Whether every learned org is in the file (else `/readyz` is 503).
    pub(crate) fn durable(&self) -> bool {
        self.durable.load(Ordering::Acquire)
    }

    /// Appends entries under the writer lock and returns once they are on disk, together
    /// with any earlier entries that had not landed; `false` when the file did not take them
    /// (they stay queued for [`Journal::retry`]). A file deleted or replaced under the
    /// gateway is rewritten from `learned` (and what the new file holds).
    pub(crate) fn write(&self, entries: Vec<(String, String)>, learned: &LearnedOrgs) -> bool {
        let mut unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        unwritten.extend(entries);
        let outcome = self.write_down(&unwritten, learned);
        match outcome {
            Ok(()) => {
                if !self.durable.swap(true, Ordering::AcqRel) {
                    tracing::info!(file = %self.file.path().display(), "learned-orgs journal written again");
                }
                unwritten.clear();
                true
            }
            Err(e) => {
                self.note_failure(&e, unwritten.len());
                self.durable.store(false, Ordering::Release);
                false
            }
        }
    }

    /// Retries what did not land, and rewrites a file deleted or replaced under the gateway.
    pub(crate) fn retry(&self, learned: &LearnedOrgs) {
        let pending = !self.unwritten.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if pending || self.gone() {
            self.write(Vec::new(), learned);
        }
    }

    /// Whether the path no longer names the file this journal writes (deleted, replaced).
    fn gone(&self) -> bool {
        self.file.moved() || !self.file.path().exists()
    }

    fn write_down(&self, unwritten: &[(String, String)], learned: &LearnedOrgs) -> Result<(), AppendError> {
        let _lock = WriterLock::take(self.file.path())?;
        let appended = if self.gone() {
            Err(AppendError::Moved)
        } else if unwritten.is_empty() {
            Ok(())
        } else {
            let mut buf = Vec::with_capacity(unwritten.len() * 64);
            for (p, o) in unwritten {
                buf.extend_from_slice(&line(p, o)?);
            }
            self.file.append(&buf)
        };
        match appended {
            Err(AppendError::Moved) => {
                self.note_failure(&AppendError::Moved, unwritten.len());
                self.rewrite(learned).map_err(AppendError::Failed)
            }
            other => other,
        }
    }

    /// Writes the whole journal from memory, with whatever the file at the path holds now
    /// (another writer's lines are learned, not lost). Caller holds the lock.
    fn rewrite(&self, learned: &LearnedOrgs) -> io::Result<()> {
        for (p, o) in parse(&read_all(self.file.path()).unwrap_or_default()).entries {
            learned.learn(&p, &o);
        }
        compact(&self.file, &learned.entries())?;
        tracing::warn!(file = %self.file.path().display(), "learned-orgs journal was deleted or replaced: rewritten from memory");
        Ok(())
    }

    fn note_failure(&self, e: &AppendError, unwritten: usize) {
        self.failures.inc();
        if self.logs.due() {
            tracing::error!(
                file = %self.file.path().display(),
                unwritten,
                "learned-orgs journal write failed ({e}): the orgs are in force but not on disk; \
                 not ready until a retry writes them"
            );
        }
    }

    /// Starts the writer thread: it appends queued lines in batches (one fsync each), tells
    /// each line's waiter, and every [`RETRY_EVERY`] retries what did not land.
    pub(crate) fn start_writer(self: &Arc<Self>, learned: Arc<LearnedOrgs>) -> io::Result<JournalWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let journal = self.clone();
        std::thread::Builder::new()
            .name("authgate-journal".into())
            .spawn(move || journal.run_writer(&rx, &learned))?;
        Ok(JournalWriter { jobs: tx })
    }

    fn run_writer(&self, jobs: &mpsc::Receiver<Job>, learned: &LearnedOrgs) {
        loop {
            let first = match jobs.recv_timeout(RETRY_EVERY) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.retry(learned);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let batch: Vec<Job> = std::iter::once(first).chain(jobs.try_iter()).collect();
            let entries = batch.iter().map(|j| (j.partner.clone(), j.org.clone())).collect();
            let landed = self.write(entries, learned);
            for job in batch {
                (job.done)(landed);
            }
        }
    }

    /// Re-reads the journal and learns what other writers (`authgate orgs import`) appended
    /// since start. Returns how many orgs were new to this process.
    pub(crate) fn refresh(&self, learned: &LearnedOrgs) -> io::Result<usize> {
        let replay = parse(&read_all(self.file.path())?);
        Ok(replay.entries.iter().filter(|(p, o)| learned.learn(p, o)).count())
    }
}

/// Appends the orgs of `partner` that the journal does not hold yet, under the writer lock
/// (`authgate orgs import` without Redis). Returns how many were new.
pub(crate) fn import(path: &Path, partner: &str, orgs: &[String]) -> io::Result<usize> {
    let _lock = WriterLock::take(path)?;
    let existing: HashSet<(String, String)> = parse(&read_all(path)?).entries.into_iter().collect();
    let mut buf = Vec::new();
    let mut added = HashSet::new();
    for org in orgs {
        let key = (partner.to_string(), org.clone());
        if !existing.contains(&key) && added.insert(key) {
            buf.extend_from_slice(&line(partner, org)?);
        }
    }
    if !buf.is_empty() {
        AppendFile::new(path).append(&buf).map_err(|e| match e {
            AppendError::Failed(e) => e,
            AppendError::Moved => io::Error::other("the journal was replaced while it was written"),
        })?;
    }
    Ok(added.len())
}

/// The orgs the journal records for `partner`, in first-seen order (`authgate orgs list`).
pub(crate) fn orgs_of(path: &Path, partner: &str) -> io::Result<Vec<String>> {
    let entries = dedupe(parse(&read_all(path)?).entries);
    Ok(entries
        .into_iter()
        .filter(|(p, _)| p == partner)
        .map(|(_, o)| o)
        .collect())
}

#[cfg(test)]
mod tests;
