//! Append-only state files: the learned-orgs journal and the local revocation state file.
//!
//! Both keep one line per record, and both promise the same thing (docs/reference.md#partial-failures):
//! a record counts only once it is on disk; a crash at any moment leaves either the old or
//! the new file; a failed append (a full disk, a read-only volume, the file deleted under
//! it) is cut back to the last whole line, so the torn fragment never swallows the next
//! record; and a file that is damaged is set aside and kept, never rewritten away.
//!
//! The revocation file is also *checked*: it starts with a header line (so a file emptied
//! to 0 bytes is told apart from one never written) and every record line carries the
//! CRC-32 of its payload (so one flipped byte anywhere is found, not read as another key).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Reads a whole state file; a missing file is empty (nothing recorded yet). Any other
/// error is returned: forgetting recorded state would fail open or deny partners.
pub(crate) fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Where a state file is damaged: its first bad line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) line: usize,
    pub(crate) what: &'static str,
}

/// One checked line: `<crc32 of payload, 8 hex digits> <payload>\n`.
pub(crate) fn checked_line(payload: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(payload.len() + 10);
    line.extend_from_slice(format!("{:08x} ", crc32fast::hash(payload)).as_bytes());
    line.extend_from_slice(payload);
    line.push(b'\n');
    line
}

/// The payloads of a checked file that starts with `header` (one line, without its
/// newline), in order; or the first line that is not what the writer wrote. An empty file
/// is damaged: the writer always starts with the header.
pub(crate) fn checked_lines<'a>(data: &'a [u8], header: &str) -> Result<Vec<&'a [u8]>, Damage> {
    let damage = |line, what| Err(Damage { line, what });
    let mut lines = data.split_inclusive(|&b| b == b'\n');
    match lines.next() {
        None => return damage(1, "the file is empty, but a written one starts with a header line"),
        Some(first) if first.strip_suffix(b"\n") != Some(header.as_bytes()) => {
            return damage(1, "the header line is not the one the gateway writes")
        }
        Some(_) => {}
    }
    let mut payloads = Vec::new();
    for (i, line) in lines.enumerate() {
        let number = i + 2;
        let Some(body) = line.strip_suffix(b"\n") else {
            return damage(number, "the last line is cut off (no newline)");
        };
        match payload_of(body) {
            Some(p) => payloads.push(p),
            None => return damage(number, "the line's checksum does not match its content"),
        }
    }
    Ok(payloads)
}

/// The payload of one checked line (without its newline) when its checksum matches.
fn payload_of(body: &[u8]) -> Option<&[u8]> {
    if body.len() < 9 || body[8] != b' ' {
        return None;
    }
    let (sum, payload) = (&body[..8], &body[9..]);
    let sum = u32::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    (crc32fast::hash(payload) == sum && sum_is_lower_hex(&body[..8])).then_some(payload)
}

/// The writer spells checksums in lower-case hex; any other spelling is a changed byte.
fn sum_is_lower_hex(sum: &[u8]) -> bool {
    sum.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// `<path>.damaged-<unix seconds>` (with `-2`, `-3`... when that name is taken).
fn damaged_name(path: &Path) -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let base = format!("{}.damaged-{secs}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 2;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// Moves a damaged file aside, kept for whoever investigates; returns its new name.
pub(crate) fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let to = damaged_name(path);
    std::fs::rename(path, &to)?;
    sync_dir(path)?;
    Ok(to)
}

/// Keeps a copy of a damaged file before it is rewritten; returns the copy's name.
pub(crate) fn keep_copy(path: &Path) -> io::Result<PathBuf> {
    let to = damaged_name(path);
    std::fs::copy(path, &to)?;
    File::open(&to)?.sync_all()?;
    sync_dir(path)?;
    Ok(to)
}

/// The damaged files set aside next to `path`, oldest name first (`authgate check`).
pub(crate) fn damaged_copies(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.damaged-", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Lets a line about a state file that keeps failing (a full disk is retried every half
/// second) be logged at most once per interval; every failure is still counted.
pub(crate) struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    /// Nothing logged yet.
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether a line may be written now (and, if so, that one is).
    pub(crate) fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = last.is_none_or(|t| now.duration_since(t) >= self.every);
        if due {
            *last = Some(now);
        }
        due
    }
}

/// Why an append did not land.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The write or the fsync failed; the file was cut back to its last whole line.
    Failed(io::Error),
    /// The path no longer names the file this writer had open (deleted, or replaced by
    /// another file): the owner rewrites it from memory.
    Moved,
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Failed(e) => write!(f, "{e}"),
            AppendError::Moved => f.write_str("the file was deleted or replaced under the gateway"),
        }
    }
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> AppendError {
        AppendError::Failed(e)
    }
}

/// A state file opened for appending on first use, reopened after a failed write.
pub(crate) struct AppendFile {
    path: PathBuf,
    /// The first line of a checked file, newline included: written first into an empty one.
    header: Option<Vec<u8>>,
    file: Mutex<Option<File>>,
}

impl AppendFile {
    /// Nothing is opened yet: a missing file is created by the first append.
    pub(crate) fn new(path: &Path) -> AppendFile {
        AppendFile {
            path: path.to_path_buf(),
            header: None,
            file: Mutex::new(None),
        }
    }

    /// A checked file: `header` (without its newline) is its first line.
    pub(crate) fn with_header(path: &Path, header: &str) -> AppendFile {
        let mut line = header.as_bytes().to_vec();
        line.push(b'\n');
        AppendFile {
            header: Some(line),
            ..AppendFile::new(path)
        }
    }

    /// The file's path (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn handle(&self) -> io::Result<MutexGuard<'_, Option<File>>> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            // read too: a torn tail is found by reading the file's last bytes
            let f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&self.path)?;
            *guard = Some(f);
        }
        Ok(guard)
    }

    /// Opens (creating) the file now, so a start can report a file it cannot write.
    pub(crate) fn open_now(&self) -> io::Result<()> {
        self.handle().map(drop)
    }

    /// Whether the path no longer names the file this writer has open (deleted or
    /// replaced). `false` while nothing is open.
    pub(crate) fn moved(&self) -> bool {
        let guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().is_some_and(|f| names_another_file(f, &self.path))
    }

    /// Appends whole lines and returns once they are on disk (`fdatasync`). A failed write
    /// is cut back to the last whole line before it returns, and the file is reopened on
    /// the next append; a torn tail another writer's crash left is cut the same way first.
    pub(crate) fn append(&self, lines: &[u8]) -> Result<(), AppendError> {
        let mut guard = self.handle()?;
        let Some(f) = guard.as_mut() else {
            return Err(AppendError::Failed(io::Error::other("state file not open")));
        };
        if names_another_file(f, &self.path) {
            *guard = None;
            return Err(AppendError::Moved);
        }
        let outcome = append_whole(f, self.header.as_deref(), lines);
        if outcome.is_err() {
            *guard = None;
        }
        outcome.map_err(AppendError::Failed)
    }

    /// Replaces the file's content with `lines` (after the header of a checked file; see
    /// [`replace`]); later appends go to the new file, which stays open so a deletion or
    /// replacement of it is noticed ([`AppendFile::moved`]).
    pub(crate) fn replace(&self, lines: &[u8]) -> io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        match &self.header {
            Some(h) => {
                let mut content = Vec::with_capacity(h.len() + lines.len());
                content.extend_from_slice(h);
                content.extend_from_slice(lines);
                replace(&self.path, &content)?;
            }
            None => replace(&self.path, lines)?,
        }
        *guard = OpenOptions::new().read(true).append(true).open(&self.path).ok();
        Ok(())
    }
}

/// Whether `path` names another file than the open `f` (or none at all).
fn names_another_file(f: &File, path: &Path) -> bool {
    let Ok(ours) = f.metadata() else {
        return true;
    };
    match std::fs::metadata(path) {
        Ok(m) => ours.nlink() == 0 || m.dev() != ours.dev() || m.ino() != ours.ino(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// One append on an open file: cut a torn tail, write (the header first into an empty
/// file), fsync; on failure cut back to where it started.
fn append_whole(f: &mut File, header: Option<&[u8]>, lines: &[u8]) -> io::Result<()> {
    let len = f.metadata()?.len();
    let start = whole_lines_end(f, len)?;
    if start < len {
        f.set_len(start)?;
    }
    let written = match header {
        Some(h) if start == 0 => f.write_all(h).and_then(|_| f.write_all(lines)),
        _ => f.write_all(lines),
    };
    match written.and_then(|_| f.sync_data()) {
        Ok(()) => Ok(()),
        Err(e) => {
            if let Err(cut) = f.set_len(start).and_then(|_| f.sync_data()) {
                tracing::error!("cannot cut a failed state-file append back: {cut}");
            }
            Err(e)
        }
    }
}

/// The length of `f`'s whole lines: `len` when it ends with a newline (or is empty), else
/// just past its last newline.
fn whole_lines_end(f: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = [0u8; 4096];
    let mut first = true;
    while end > 0 {
        let n = usize::try_from(end.min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = &mut buf[..n];
        f.read_exact_at(chunk, end - n as u64)?;
        if first && chunk.last() == Some(&b'\n') {
            return Ok(len);
        }
        first = false;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(end - n as u64 + i as u64 + 1);
        }
        end -= n as u64;
    }
    Ok(0)
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
    sync_dir(path)
}

/// fsyncs the directory holding `path`, so a rename or a new file in it survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
