//! Starting a view from the state file: read it whole, or set it aside when damaged.

use super::*;

/// What a start found at the state file's path.
enum Found {
    /// No file: a first start, or a file someone removed.
    Missing,
    /// A whole file: its records and how many record lines it had.
    Whole(HashMap<RecordKey, Record>, usize),
    /// A damaged file, already set aside under its new name.
    Damaged,
}

/// Reads the state file at `path`; a damaged one is logged (file and line), renamed
/// `<name>.damaged-<unix seconds>` and kept. A file that exists but cannot be read or set
/// aside is an error: forgetting revocations would fail open.
fn found(path: &Path) -> io::Result<Found> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    match read_state(&data) {
        Ok((records, lines)) => Ok(Found::Whole(records, lines)),
        Err(damage) => {
            let kept =
                set_aside(path).map_err(|e| io::Error::other(format!("cannot set the damaged file aside: {e}")))?;
            tracing::error!(
                file = %path.display(),
                line = damage.line,
                kept = %kept.display(),
                "{}:{}: damaged revocation state file ({}); kept as {}, and treated as missing: \
                 not ready until the revocations are read from redis",
                path.display(),
                damage.line,
                damage.what,
                kept.display()
            );
            Ok(Found::Damaged)
        }
    }
}

impl RevocationView {
    /// Reads (and compacts) the state file at `path`. A missing file, or a damaged one
    /// (set aside), leaves the view unknown until Redis is read (docs/reference.md#partial-failures).
    /// `max_age` is `[redis] revocations_max_age` (`None` without `[redis]`: the view is
    /// then always known and fresh, as nothing shared can be missing from it).
    /// `write_failures` counts appends the file did not take.
    pub(crate) fn open(
        path: &Path,
        max_age: Option<Duration>,
        metrics: Option<RedisMetrics>,
        write_failures: IntCounter,
    ) -> io::Result<RevocationView> {
        let file = AppendFile::with_header(path, HEADER);
        let (records, known) = match found(path)? {
            Found::Whole(records, lines) => {
                if lines > records.len() {
                    file.replace(&lines_of(records.values()))?;
                }
                (records, true)
            }
            Found::Missing | Found::Damaged => (HashMap::new(), max_age.is_none()),
        };
        let in_force = Revocations::default();
        for r in records.values().filter(|r| r.revoked) {
            in_force.set(&r.principal(), &r.key_id, true);
        }
        if !in_force.is_empty() {
            tracing::info!(file = %path.display(), revoked = in_force.len(), "revocations applied from the state file");
        }
        let view = RevocationView {
            state: Mutex::new(State {
                records,
                file,
                unwritten: Vec::new(),
                epoch: None,
                seen: 0,
                acked: 0,
            }),
            in_force,
            known: AtomicBool::new(known),
            durable: AtomicBool::new(true),
            fresh_at: AtomicU64::new(0),
            origin: Instant::now(),
            max_age,
            metrics,
            write_failures,
            logs: Throttle::new(super::write::LOG_EVERY),
        };
        view.publish_gauges();
        Ok(view)
    }
}
