//! Append-only state files: the learned-orgs journal and the local revocation state file.
//!
//! Both keep one JSON line per record, and both promise the same thing: a record counts only
//! once it is on disk, and a crash at any moment leaves either the old or the new file. One
//! helper keeps that promise for both (they had drifted: one fsynced the directory after
//! a compaction's rename, the other did not, so a crash could bring back the old file).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Reads a whole state file; a missing file is empty (nothing recorded yet). Any other
/// error is returned: forgetting recorded state would fail open or deny partners.
pub(crate) fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A state file opened for appending on first use, reopened after a failed write.
pub(crate) struct AppendFile {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl AppendFile {
    /// Nothing is opened yet: a missing file is created by the first append.
    pub(crate) fn new(path: &Path) -> AppendFile {
        AppendFile {
            path: path.to_path_buf(),
            file: Mutex::new(None),
        }
    }

    /// The file's path (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn handle(&self) -> io::Result<MutexGuard<'_, Option<File>>> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        Ok(guard)
    }

    /// Opens (creating) the file now, so a start can report a file it cannot write.
    pub(crate) fn open_now(&self) -> io::Result<()> {
        self.handle().map(drop)
    }

    /// Appends whole lines and returns once they are on disk (`fdatasync`). After a failure
    /// the file is reopened on the next append.
    pub(crate) fn append(&self, lines: &[u8]) -> io::Result<()> {
        let mut guard = self.handle()?;
        let result = match guard.as_mut() {
            Some(f) => f.write_all(lines).and_then(|_| f.sync_data()),
            None => Err(io::Error::other("state file not open")),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Replaces the file's content with `content` (see [`replace`]); later appends go to the
    /// new file.
    pub(crate) fn replace(&self, content: &[u8]) -> io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        replace(&self.path, content)
    }
}

/// Rewrites `path` with `content` through `<path>.tmp`: written, fsynced, renamed over the
/// file, then the directory fsynced so the rename itself survives a crash. A crash leaves
/// either the old or the new file, never a mix.
pub(crate) fn replace(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("authgate-state-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn appends_then_a_replace_then_appends_to_the_new_file() {
        let path = tmp("replace");
        assert_eq!(read_all(&path).unwrap(), b"", "missing = empty");
        let f = AppendFile::new(&path);
        f.append(b"a\n").unwrap();
        f.append(b"b\n").unwrap();
        assert_eq!(read_all(&path).unwrap(), b"a\nb\n");
        f.replace(b"b\n").unwrap();
        // the old handle pointed at the renamed-over file; the next append must not be lost
        f.append(b"c\n").unwrap();
        assert_eq!(read_all(&path).unwrap(), b"b\nc\n");
        assert!(!Path::new(&format!("{}.tmp", path.display())).exists());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_state_file_that_cannot_be_read_is_an_error_not_empty() {
        let dir = tmp("is-a-dir");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read_all(&dir).is_err());
        let _ = std::fs::remove_dir(&dir);
    }
}
