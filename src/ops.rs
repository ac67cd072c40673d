//! Operator commands (docs/reference.md#commands): `authgate revoke` / `unrevoke` (shared revocations)
//! and `authgate orgs import` / `orgs list` (orgs created before the gateway stood in front
//! of the API). Each returns the process exit code and prints what it did. With `[redis]`
//! they talk to Redis (a few seconds' time bound per command); without it, revocations
//! live in the policy file and imports go to the journal, under its lock.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::settings::RedisSettings;
use crate::config::Settings;
use crate::metrics::RedisMetrics;
use crate::policy::principal::Principal;
use crate::shared::announce::{verdicts, RECENT};
use crate::shared::view::Record;
use crate::shared::Shared;

/// Exit code of `revoke` when the record is stored but some replica did not apply it in time.
const SOME_NOT_APPLIED: u8 = 3;

/// `authgate revoke` (`revoked = true`) and `authgate unrevoke`: a record in the shared
/// revocation hash, published to every replica; then waits up to `wait` until every replica
/// announced in the last 10 s has applied it, and prints one line per replica. Exit 0: all
/// applied; 3: stored, but some did not (yet); 1: Redis unreachable, nothing stored.
pub fn revoke(config: &Path, principal: &Principal, key_id: &str, revoked: bool, wait: Duration) -> ExitCode {
    let Some(settings) = settings(config) else {
        return ExitCode::from(1);
    };
    let verb = if revoked { "revoke" } else { "unrevoke" };
    let Some(redis) = settings.redis.clone() else {
        eprintln!(
            "authgate {verb}: shared revocations need [redis] in {} (docs/reference.md#redis). Without it, \
             {} the key id {key_id:?} {} revoked_keys of the [[{}]] entry with id {:?} in {} and \
             send SIGHUP to each gateway.",
            config.display(),
            if revoked { "add" } else { "remove" },
            if revoked { "to" } else { "from" },
            principal.kind().as_str(),
            &**principal.id(),
            settings.policy_file.display()
        );
        return ExitCode::from(1);
    };
    let outcome = with_redis(redis, |shared| async move {
        let current = shared
            .current(principal, key_id)
            .await
            .ok_or("cannot read the revocation hash; nothing was stored")?;
        let mut record = Record::new(principal, key_id, revoked);
        if let Some(c) = current {
            record.at = record.at.max(c.at + 1); // an immediate unrevoke still wins
        }
        let (stored, seq) = shared
            .store(&record)
            .await
            .ok_or("cannot write the revocation hash; nothing was stored")?;
        if seq == 0 || stored.revoked != revoked {
            return Ok(None);
        }
        Ok(Some((stored, seq, wait_for_replicas(&shared, seq, wait).await)))
    });
    match outcome {
        Ok(Some((stored, seq, replicas))) => report(verb, &stored, seq, replicas, wait),
        Ok(None) => {
            eprintln!("authgate {verb}: a newer record of this key is in force; nothing changed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("authgate {verb}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Polls the replicas' announcements until every one has applied record `seq` or `wait`
/// passed; the last list read (`None`: it could not be read).
async fn wait_for_replicas(shared: &Shared, seq: u64, wait: Duration) -> Option<Vec<(String, u64)>> {
    let deadline = Instant::now() + wait;
    loop {
        let replicas = shared.replicas().await;
        let all = replicas
            .as_ref()
            .is_some_and(|r| verdicts(r, seq).iter().all(|(_, applied)| *applied));
        if all || Instant::now() >= deadline {
            return replicas;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints one line per replica and the summary; the exit code.
fn report(verb: &str, stored: &Record, seq: u64, replicas: Option<Vec<(String, u64)>>, wait: Duration) -> ExitCode {
    let Some(replicas) = replicas else {
        eprintln!(
            "authgate {verb}: stored {} (record {seq}), but the replicas' announcements could not be read",
            stored.describe()
        );
        return ExitCode::from(SOME_NOT_APPLIED);
    };
    let verdicts = verdicts(&replicas, seq);
    for (id, applied) in &verdicts {
        println!("{id} {}", if *applied { "applied" } else { "NOT applied" });
    }
    let applied = verdicts.iter().filter(|(_, a)| *a).count();
    eprintln!(
        "authgate {verb}: {verb}d {} (record {seq}); {applied} of {} replica(s) announced in the last {}s applied it{}",
        stored.describe(),
        verdicts.len(),
        RECENT.as_secs(),
        if applied == verdicts.len() {
            String::new()
        } else {
            format!(" within {wait:?}; the record stays stored and the others apply it when they can")
        }
    );
    if applied == verdicts.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_NOT_APPLIED)
    }
}

/// Runs `f` with a connected Redis client on a private runtime; `Err` when Redis does not
/// answer.
fn with_redis<T, F, Fut>(redis: RedisSettings, f: F) -> Result<T, String>
where
    F: FnOnce(Arc<Shared>) -> Fut,
    Fut: std::future::Future<Output = Result<T, &'static str>>,
{
    let url = crate::config::settings::redacted_url(&redis.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let metrics = RedisMetrics::unregistered().map_err(|e| e.to_string())?;
        let shared =
            Arc::new(Shared::new(redis, metrics, tokio::runtime::Handle::current()).map_err(|e| e.to_string())?);
        if !shared.ping().await {
            return Err(format!("redis at {url} does not answer"));
        }
        f(shared).await.map_err(str::to_string)
    })
}

/// `authgate orgs import`: one org id per line from `file` (or stdin for `-`/none), blank
/// lines and `#` comments skipped; prints how many were new. All or nothing: with `[redis]`
/// the orgs go to Redis in one atomic script, then to the journal; if either fails, nothing
/// stays written and the command says to run it again. A partner the policy file does not
/// list is refused unless `allow_unknown_partner`.
pub fn orgs_import(config: &Path, partner: &str, file: Option<&Path>, allow_unknown_partner: bool) -> ExitCode {
    let Some(settings) = settings(config) else {
        return ExitCode::from(1);
    };
    if !allow_unknown_partner && !partner_listed(&settings, partner) {
        return ExitCode::from(1);
    }
    let text = match read_input(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("authgate orgs import: cannot read the org list: {e}");
            return ExitCode::from(1);
        }
    };
    let orgs = org_lines(&text);
    let journal = &settings.learned_orgs_file;
    let Some(redis) = settings.redis.clone() else {
        return match crate::journal::import(journal, partner, &orgs) {
            Ok(n) => {
                println!("{n}");
                eprintln!(
                    "authgate orgs import: {n} of {} org(s) new for partner {partner:?} in {} \
                     (running gateways pick them up on SIGHUP)",
                    orgs.len(),
                    journal.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("authgate orgs import: cannot write {}: {e}", journal.display());
                ExitCode::from(1)
            }
        };
    };
    let count = orgs.len();
    let outcome = with_redis(redis, |shared| async move {
        let new = shared.import(partner, &orgs).await.ok_or("cannot write to redis")?;
        match crate::journal::import(journal, partner, &orgs) {
            Ok(_) => Ok(new.len()),
            Err(e) => {
                eprintln!("authgate orgs import: cannot write {}: {e}", journal.display());
                match shared.unimport(partner, &new).await {
                    Some(_) => Err("the orgs it added to redis were taken back"),
                    None => Err("the orgs it added to redis could not be taken back (they are harmless there)"),
                }
            }
        }
    });
    match outcome {
        Ok(new) => {
            println!("{new}");
            eprintln!(
                "authgate orgs import: {new} of {count} org(s) new for partner {partner:?} in redis \
                 (every replica accepts them now) and recorded in {}",
                journal.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate orgs import: {e}; nothing was imported, run the import again");
            ExitCode::from(1)
        }
    }
}

/// Whether the policy file lists `partner` (an import for a typo would teach orgs to
/// nobody); says why not on stderr.
fn partner_listed(settings: &Settings, partner: &str) -> bool {
    match crate::config::load::load_directory(settings) {
        Ok(dir) if dir.partner(partner).is_some() => true,
        Ok(_) => {
            eprintln!(
                "authgate orgs import: partner {partner:?} is not in {}; nothing was written \
                 (--allow-unknown-partner imports anyway)",
                settings.policy_file.display()
            );
            false
        }
        Err(problems) => {
            eprintln!("authgate orgs import: cannot read the policy file:\n{problems}");
            false
        }
    }
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
                    shared.list(partner).await.ok_or("cannot read from redis")
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
