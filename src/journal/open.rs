//! Starting from the journal: replay, report damage (and keep the damaged file), compact.

use super::*;

/// Logs a damaged journal with the file and line, and keeps it as it was before the
/// compaction drops what cannot be read. Returns the copy's name.
fn report_damage(path: &Path, replay: &Replay) -> Option<PathBuf> {
    let line = replay.first_bad_line?;
    let what = if replay.unreadable > 0 {
        "a line that is not a journal entry"
    } else {
        "a last line cut off (no newline)"
    };
    let kept = match keep_copy(path) {
        Ok(kept) => Some(kept),
        Err(e) => {
            tracing::error!(file = %path.display(), "cannot keep a copy of the damaged journal: {e}");
            None
        }
    };
    tracing::error!(
        file = %path.display(),
        line,
        unreadable = replay.unreadable,
        torn_tail = replay.torn_tail,
        "{}:{line}: damaged learned-orgs journal ({what}); kept as {}, the rest replayed",
        path.display(),
        kept.as_ref().map_or_else(|| "nothing".to_string(), |k| k.display().to_string()),
    );
    kept
}

impl Journal {
    /// Replays the journal into `learned`, compacts it (one line per distinct entry; a torn
    /// or unreadable line is reported with its line number and the file as it was is kept
    /// beside it) and opens it for appending. A missing file is an empty journal; a file
    /// that exists but cannot be read is an error, because forgetting learned orgs would
    /// deny partners. `failures` counts appends the file did not take.
    pub fn open(path: &Path, learned: &LearnedOrgs, failures: IntCounter) -> io::Result<Journal> {
        let journal = Journal {
            file: AppendFile::new(path),
            unwritten: Mutex::new(Vec::new()),
            durable: AtomicBool::new(true),
            failures,
            logs: Throttle::new(LOG_EVERY),
        };
        let lock = WriterLock::take(path);
        let data = read_all(path)?;
        let replay = parse(&data);
        report_damage(path, &replay);
        let read = replay.entries.len();
        let damaged = replay.first_bad_line.is_some();
        let entries = dedupe(replay.entries);
        for (p, o) in &entries {
            learned.learn(p, o);
        }
        match lock {
            Ok(_held) if entries.len() < read || damaged => {
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

    /// Appends one entry under the writer lock and waits until it is on disk (tests and
    /// benches; the gateway appends through [`Journal::start_writer`]). `learned` is what a
    /// journal deleted under the writer is rewritten from.
    pub fn append(&self, learned: &LearnedOrgs, partner: &str, org: &str) -> io::Result<()> {
        if self.write(vec![(partner.to_string(), org.to_string())], learned) {
            Ok(())
        } else {
            Err(io::Error::other("the learned-orgs journal did not take the line"))
        }
    }
}
