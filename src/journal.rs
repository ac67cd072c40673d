//! The learned-orgs journal (docs/reference.md#learned-orgs): one JSON line per learned org, appended and
//! fsynced before the create response completes, replayed and compacted at start.
//!
//! Every writer (the gateway's appends, its start-up compaction, `authgate orgs import`)
//! holds an exclusive `flock` on a sidecar `<journal>.lock` file while it writes. The lock
//! lives on a file that is never renamed, so compaction (write a temp file, fsync, rename
//! over the journal) cannot pull the lock out from under another writer.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::ownership::LearnedOrgs;
use crate::state_file::{read_all, AppendFile};

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
}

/// Reads journal bytes. Never fails: a complete line that does not parse is skipped, and
/// an unterminated last line is a torn write and is dropped.
pub fn parse(data: &[u8]) -> Replay {
    let mut replay = Replay::default();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let Some(body) = line.strip_suffix(b"\n") else {
            replay.torn_tail = true;
            break;
        };
        match serde_json::from_slice::<Entry<'_>>(body) {
            Ok(e) if !e.partner.is_empty() && !e.org.is_empty() => {
                replay.entries.push((e.partner.into_owned(), e.org.into_owned()))
            }
            _ => replay.unreadable += 1,
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

/// Append-only journal of learned orgs.
pub struct Journal {
    file: AppendFile,
}

impl Journal {
    /// Replays the journal into `learned`, compacts it (one line per distinct entry; a torn
    /// or unreadable line is dropped) and opens it for appending. A missing file is an empty
    /// journal; a file that exists but cannot be read is an error, because forgetting
    /// learned orgs would deny partners.
    pub fn open(path: &Path, learned: &LearnedOrgs) -> io::Result<Journal> {
        let journal = Journal {
            file: AppendFile::new(path),
        };
        let lock = WriterLock::take(path);
        let data = read_all(path)?;
        let replay = parse(&data);
        if replay.torn_tail {
            tracing::warn!(file = %path.display(), "dropping a torn last journal line");
        }
        if replay.unreadable > 0 {
            tracing::warn!(file = %path.display(), lines = replay.unreadable, "skipping unreadable journal lines");
        }
        let read = replay.entries.len();
        let entries = dedupe(replay.entries);
        for (p, o) in &entries {
            learned.learn(p, o);
        }
        let needs_compaction = entries.len() < read || replay.torn_tail || replay.unreadable > 0;
        match lock {
            Ok(_held) if needs_compaction => {
                compact(&journal.file, &entries)?;
                tracing::info!(file = %path.display(), before = read, after = entries.len(), "journal compacted");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(file = %path.display(), "cannot lock the learned-orgs journal: {e}"),
        }
        tracing::info!(file = %path.display(), orgs = entries.len(), "learned orgs replayed");
        if let Err(e) = journal.file.open_now() {
            tracing::error!(file = %path.display(), "learned-orgs journal is not writable: {e}");
        }
        Ok(journal)
    }

    /// Appends one entry under the writer lock and waits until it is on disk.
    pub fn append(&self, partner: &str, org: &str) -> io::Result<()> {
        let line = line(partner, org)?;
        let _lock = WriterLock::take(self.file.path())?;
        self.file.append(&line)
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
        AppendFile::new(path).append(&buf)?;
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
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("authgate-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(lock_path(&path));
        path
    }

    fn cleanup(path: &Path) {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(lock_path(path));
    }

    #[test]
    fn appends_survive_a_restart() {
        let path = tmp("restart");
        let learned = LearnedOrgs::new();
        let j = Journal::open(&path, &learned).unwrap();
        j.append("acme", "o-1").unwrap();
        j.append("acme", "o-2").unwrap();
        drop(j);
        let again = LearnedOrgs::new();
        Journal::open(&path, &again).unwrap();
        assert!(again.owns("acme", "o-1") && again.owns("acme", "o-2"));
        cleanup(&path);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_removed() {
        let path = tmp("torn");
        std::fs::write(&path, b"{\"partner\":\"a\",\"org\":\"o-1\"}\n{\"partner\":\"a\",\"or").unwrap();
        let learned = LearnedOrgs::new();
        let j = Journal::open(&path, &learned).unwrap();
        assert!(learned.owns("a", "o-1"));
        assert_eq!(learned.len(), 1);
        j.append("a", "o-2").unwrap();
        drop(j);
        let again = LearnedOrgs::new();
        Journal::open(&path, &again).unwrap();
        assert!(again.owns("a", "o-2"));
        assert_eq!(again.len(), 2);
        cleanup(&path);
    }

    #[test]
    fn start_compacts_duplicates_and_junk_but_keeps_every_partner() {
        let path = tmp("compact");
        let mut data = Vec::new();
        for _ in 0..50 {
            data.extend_from_slice(b"{\"partner\":\"a\",\"org\":\"o-1\"}\n");
        }
        data.extend_from_slice(b"garbage\n");
        // a partner that may no longer be in the policy: kept, never deleted
        data.extend_from_slice(b"{\"partner\":\"gone\",\"org\":\"o-9\"}\n");
        data.extend_from_slice(b"{\"partner\":\"a\",\"org\":\"o-2\"}\n{\"partner\"");
        std::fs::write(&path, &data).unwrap();
        let learned = LearnedOrgs::new();
        drop(Journal::open(&path, &learned).unwrap());
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            "{\"partner\":\"a\",\"org\":\"o-1\"}\n{\"partner\":\"gone\",\"org\":\"o-9\"}\n{\"partner\":\"a\",\"org\":\"o-2\"}\n"
        );
        assert!(learned.owns("gone", "o-9"));
        assert!(!Path::new(&format!("{}.tmp", path.display())).exists());
        cleanup(&path);
    }

    #[test]
    fn import_is_idempotent_and_refresh_picks_it_up() {
        let path = tmp("import");
        let learned = LearnedOrgs::new();
        let j = Journal::open(&path, &learned).unwrap();
        learned.learn("acme", "o-1"); // as the proxy does before appending
        j.append("acme", "o-1").unwrap();
        let orgs: Vec<String> = ["o-1", "o-2", "o-3", "o-2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(import(&path, "acme", &orgs).unwrap(), 2);
        assert_eq!(import(&path, "acme", &orgs).unwrap(), 0);
        assert!(!learned.owns("acme", "o-2"));
        assert_eq!(j.refresh(&learned).unwrap(), 2);
        assert!(learned.owns("acme", "o-3"));
        assert_eq!(orgs_of(&path, "acme").unwrap(), vec!["o-1", "o-2", "o-3"]);
        assert!(orgs_of(&path, "other").unwrap().is_empty());
        cleanup(&path);
    }

    #[test]
    fn the_writer_lock_excludes_other_writers() {
        let path = tmp("lock");
        let held = WriterLock::take(&path).unwrap();
        let other = OpenOptions::new().write(true).open(lock_path(&path)).unwrap();
        assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        drop(held);
        assert!(other.try_lock().is_ok());
        cleanup(&path);
    }

    #[test]
    fn parse_never_fails() {
        assert_eq!(parse(b""), Replay::default());
        let r = parse(b"{\"partner\":\"\",\"org\":\"o\"}\n[]\n\xff\n{\"partner\":\"p\",\"org\":\"o\"}\n{");
        assert_eq!(r.entries, vec![("p".to_string(), "o".to_string())]);
        assert_eq!(r.unreadable, 3);
        assert!(r.torn_tail);
    }
}
