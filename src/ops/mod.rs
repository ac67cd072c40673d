//! Operator commands (docs/reference.md#commands): `authgate revoke` / `unrevoke` (shared revocations)
//! and `authgate orgs import` / `orgs list` (orgs created before the gateway stood in front
//! of the API). Each returns the process exit code and prints what it did. With `[redis]`
//! they talk to Redis (a few seconds' time bound per command); without it, revocations
//! live in the policy file and imports go to the journal, under its lock.
//!
//! What they say is true (docs/reference.md#partial-failures): a write carries a deadline
//! by Redis's own clock and the script refuses to apply past it, so "nothing was written"
//! is said only when Redis said so or nothing was sent; a write whose answer never came may
//! have landed, and the command says the outcome is unknown (exit 4). `revoke` with no
//! replica announced reached nobody (exit 3), and a partner or org the policy file does
//! not list is refused unless asked for.

mod import;
mod revoke;

pub use import::orgs_import;
pub use revoke::revoke;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::settings::RedisSettings;
use crate::config::Settings;
use crate::metrics::RedisMetrics;
use crate::shared::faults::Fault;
use crate::shared::Shared;

/// Exit code when a write may or may not have reached Redis.
const OUTCOME_UNKNOWN: u8 = 4;

/// How long a command's write may take, by Redis's clock from just before it is sent: past
/// it the script refuses to apply (the command itself waits [`crate::shared`]'s 5 s bound,
/// a little longer, so a late write is answered "late" rather than left unknown).
const WRITE_BUDGET: Duration = Duration::from_secs(4);

/// Why a command did not do what it was asked.
#[derive(Debug)]
enum Failure {
    /// Nothing was written (exit 1); the text says why.
    NothingWritten(String),
    /// A write was sent and no answer came: it may have landed (exit 4).
    Unknown(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NothingWritten(why) | Failure::Unknown(why) => f.write_str(why),
        }
    }
}

impl Failure {
    /// A failed write: unknown when the command was sent and no (readable) answer came
    /// back; nothing written when Redis answered with an error (every script checks before
    /// it writes, and a refused command runs nothing).
    fn of_write(fault: Fault, what: &str) -> Failure {
        match fault {
            Fault::Timeout | Fault::Io | Fault::Reply => {
                Failure::Unknown(format!("{what}: no answer from redis ({})", fault.as_str()))
            }
            _ => Failure::NothingWritten(format!("{what}: redis refused it ({})", fault.as_str())),
        }
    }
}

/// Runs `f` with a connected Redis client on a private runtime; nothing written when Redis
/// does not answer.
fn with_redis<T, F, Fut>(redis: RedisSettings, f: F) -> Result<T, Failure>
where
    F: FnOnce(Arc<Shared>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let url = crate::config::settings::redacted_url(&redis.url);
    let failed = |e: &dyn std::fmt::Display| Failure::NothingWritten(e.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&e))?;
    rt.block_on(async move {
        let metrics = RedisMetrics::unregistered().map_err(|e| failed(&e))?;
        let shared = Shared::new(redis, metrics, tokio::runtime::Handle::current()).map_err(|e| failed(&e))?;
        let shared = Arc::new(shared);
        if !shared.ping().await {
            return Err(Failure::NothingWritten(format!("redis at {url} does not answer")));
        }
        f(shared).await
    })
}

/// The deadline of a write starting now, in Redis's clock (ms); nothing written when Redis
/// cannot say what time it is.
async fn write_deadline(shared: &Shared) -> Result<u64, Failure> {
    match shared.time_ms().await {
        Some(now) => Ok(now + WRITE_BUDGET.as_millis() as u64),
        None => Err(Failure::NothingWritten("cannot read redis's clock".into())),
    }
}

/// Prints what an unknown outcome means and returns its exit code.
fn unknown(command: &str, why: &str) -> ExitCode {
    eprintln!("authgate {command}: {why}; the outcome is unknown; running it again is safe");
    ExitCode::from(OUTCOME_UNKNOWN)
}

/// `authgate orgs list`: the partner's learned orgs, one per line.
pub fn orgs_list(config: &Path, partner: &str) -> ExitCode {
    let Some(settings) = settings(config) else {
        return ExitCode::from(1);
    };
    match crate::journal::orgs_of(&settings.learned_orgs_file, partner) {
        Ok(mut orgs) => {
            if let Some(redis) = settings.redis.clone() {
                match with_redis(redis, |shared| async move {
                    let list = shared.list(partner).await;
                    list.ok_or_else(|| Failure::NothingWritten("cannot read from redis".into()))
                }) {
                    Ok(mut shared) => {
                        shared.sort();
                        for o in shared {
                            if !orgs.contains(&o) {
                                orgs.push(o);
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("authgate orgs list: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            for o in orgs {
                println!("{o}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "authgate orgs list: cannot read {}: {e}",
                settings.learned_orgs_file.display()
            );
            ExitCode::from(1)
        }
    }
}

/// `authgate check` with `[redis]`: an unreachable Redis is a warning on stderr, not a
/// refusal (the gateway starts and falls back per `on_error` until Redis answers).
pub fn warn_if_redis_unreachable(settings: &Settings) {
    if let Some(redis) = &settings.redis {
        if let Err(e) = crate::shared::ping_once(redis, std::time::Duration::from_secs(2)) {
            eprintln!(
                "warning: redis at {} is not reachable now ({e}); the gateway starts anyway and \
                 uses it once it answers (until then: on_error = {:?})",
                crate::config::settings::redacted_url(&redis.url),
                redis.on_error
            );
        }
    }
}

/// `authgate check`: a damaged local state file (the revocation state file, the learned-orgs
/// journal) is a warning on stderr as `file:line: message`, not a refusal: the gateway starts
/// and treats a damaged revocation file as missing (not ready until Redis is read), and
/// keeps what it cannot read of either beside it. Files it already set aside are named too.
pub fn warn_of_damaged_state_files(settings: &Settings) {
    let revocations = settings.revocations_file();
    match crate::shared::view::inspect(&revocations) {
        Ok(Some(d)) => eprintln!(
            "warning: {}:{}: damaged revocation state file ({}); the gateway sets it aside as \
             {}.damaged-<unix seconds> and is not ready until it has read the revocations from redis",
            revocations.display(),
            d.line,
            d.what,
            revocations.display()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("warning: {}: cannot read: {e}", revocations.display()),
    }
    let journal = &settings.learned_orgs_file;
    match crate::state_file::read_all(journal).map(|d| crate::journal::parse(&d)) {
        Ok(replay) => {
            if let Some(line) = replay.first_bad_line {
                eprintln!(
                    "warning: {}:{line}: damaged learned-orgs journal ({} unreadable line(s){}); the gateway \
                     keeps a copy and replays the rest",
                    journal.display(),
                    replay.unreadable,
                    if replay.torn_tail { ", a cut-off last line" } else { "" }
                );
            }
        }
        Err(e) => eprintln!("warning: {}: cannot read: {e}", journal.display()),
    }
    for kept in [&revocations, journal]
        .into_iter()
        .flat_map(|f| crate::state_file::damaged_copies(f))
    {
        eprintln!(
            "warning: {}: a damaged state file the gateway set aside",
            kept.display()
        );
    }
}

/// The ids of an import list: one per line, trimmed; blank lines and `#` comments skipped.
pub(crate) fn org_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn read_input(file: Option<&Path>) -> std::io::Result<String> {
    match file {
        Some(p) if p != Path::new("-") => std::fs::read_to_string(p),
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            Ok(s)
        }
    }
}

/// The validated gateway settings (key files and the policy file are not needed here).
fn settings(config: &Path) -> Option<Settings> {
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read config file: {e}", config.display());
            return None;
        }
    };
    match crate::config::load::settings_from_text(config, &text) {
        (Some(s), problems) if problems.is_empty() => Some(s),
        (_, problems) => {
            eprintln!("{problems}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines() {
        assert_eq!(
            org_lines("a\n  b  \n\n# comment\nc\r\n"),
            vec!["a".to_string(), "b".into(), "c".into()]
        );
    }
}
