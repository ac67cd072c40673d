//! The learned-orgs journal (CONTRACT §3): one JSON line per learned org, appended and
//! fsynced before the create response completes, replayed at start.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::policy::ownership::LearnedOrgs;

#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    partner: std::borrow::Cow<'a, str>,
    org: std::borrow::Cow<'a, str>,
}

/// Append-only journal of learned orgs.
pub struct Journal {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl Journal {
    /// Replays the journal into `learned` (a torn last line is dropped and truncated away)
    /// and opens it for appending. A missing file is an empty journal; a file that exists
    /// but cannot be read is an error, because forgetting learned orgs would deny partners.
    pub fn open(path: &Path, learned: &LearnedOrgs) -> io::Result<Journal> {
        let mut replayed = 0usize;
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(mut f) => {
                let mut data = Vec::new();
                f.read_to_end(&mut data)?;
                let mut good_len = 0usize;
                for line in data.split_inclusive(|&b| b == b'\n') {
                    let complete = line.ends_with(b"\n");
                    match serde_json::from_slice::<Entry<'_>>(line.strip_suffix(b"\n").unwrap_or(line)) {
                        Ok(e) if complete => {
                            learned.learn(&e.partner, &e.org);
                            replayed += 1;
                            good_len += line.len();
                        }
                        _ if !complete => break, // torn tail: cut it off below
                        _ => {
                            tracing::warn!(file = %path.display(), "skipping an unreadable journal line");
                            good_len += line.len();
                        }
                    }
                }
                if good_len < data.len() {
                    tracing::warn!(file = %path.display(), "dropping a torn last journal line");
                    f.set_len(good_len as u64)?;
                    f.seek(SeekFrom::End(0))?;
                    f.sync_data()?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tracing::info!(file = %path.display(), orgs = replayed, "learned orgs replayed");
        let journal = Journal {
            path: path.to_path_buf(),
            file: Mutex::new(None),
        };
        if let Err(e) = journal.handle() {
            tracing::error!(file = %path.display(), "learned-orgs journal is not writable: {e}");
        }
        Ok(journal)
    }

    fn handle(&self) -> io::Result<std::sync::MutexGuard<'_, Option<File>>> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        Ok(guard)
    }

    /// Appends one entry and waits until it is on disk.
    pub fn append(&self, partner: &str, org: &str) -> io::Result<()> {
        let mut line = serde_json::to_vec(&Entry {
            partner: partner.into(),
            org: org.into(),
        })?;
        line.push(b'\n');
        let mut guard = self.handle()?;
        let result = match guard.as_mut() {
            Some(f) => f.write_all(&line).and_then(|_| f.sync_data()),
            None => Err(io::Error::other("journal not open")),
        };
        if result.is_err() {
            *guard = None; // reopen on the next append
        }
        result
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("authgate-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
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
        let _ = std::fs::remove_file(&path);
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
        let _ = std::fs::remove_file(&path);
    }
}
