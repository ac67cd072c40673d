//! Operator commands (docs/reference.md#commands): `authgate revoke` / `unrevoke` (shared revocations)
//! and `authgate orgs import` / `orgs list` (orgs created before the gateway stood in front
//! of the API). Each returns the process exit code and prints what it did. With `[redis]`
//! they talk to Redis (a few seconds' time bound per command); without it, revocations
//! live in the policy file and imports go to the journal, under its lock.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use crate::config::settings::RedisSettings;
use crate::config::Settings;
use crate::policy::principal::Principal;
use crate::shared::revocations::Record;
use crate::shared::{RedisMetrics, Shared};

/// `authgate revoke` (`revoked = true`) and `authgate unrevoke`: a record in the shared
/// revocation hash, published to every replica. Needs `[redis]`.
pub fn revoke(config: &Path, principal: &Principal, key_id: &str, revoked: bool) -> ExitCode {
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
            .ok_or("cannot read the revocation hash")?;
        let mut record = Record::new(principal, key_id, revoked);
        if let Some(c) = current {
            record.at = record.at.max(c.at + 1); // an immediate unrevoke still wins
        }
        let stored = shared.merge(&record).await.ok_or("cannot write the revocation hash")?;
        let receivers = shared.publish(&stored).await.ok_or("cannot publish the revocation")?;
        Ok::<_, &str>((stored, receivers))
    });
    match outcome {
        Ok((stored, receivers)) if stored.revoked == revoked => {
            println!(
                "{}d {} {:?} key {key_id:?} ({receivers} replica(s) subscribed)",
                verb,
                principal.kind().as_str(),
                &**principal.id()
            );
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("authgate {verb}: a newer record of this key is in force; nothing changed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("authgate {verb}: {e}");
            ExitCode::from(1)
        }
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
        if !shared.probe().await {
            return Err(format!("redis at {url} does not answer"));
        }
        f(shared).await.map_err(str::to_string)
    })
}

/// `authgate orgs import`: one org id per line from `file` (or stdin for `-`/none), blank
/// lines and `#` comments skipped; prints how many were new.
pub fn orgs_import(config: &Path, partner: &str, file: Option<&Path>) -> ExitCode {
    let Some(settings) = settings(config) else {
        return ExitCode::from(1);
    };
    let text = match read_input(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("authgate orgs import: cannot read the org list: {e}");
            return ExitCode::from(1);
        }
    };
    let orgs = org_lines(&text);
    let in_journal = match crate::journal::import(&settings.learned_orgs_file, partner, &orgs) {
        Ok(n) => n,
        Err(e) => {
            eprintln!(
                "authgate orgs import: cannot write {}: {e}",
                settings.learned_orgs_file.display()
            );
            return ExitCode::from(1);
        }
    };
    let Some(redis) = settings.redis.clone() else {
        println!("{in_journal}");
        eprintln!(
            "authgate orgs import: {in_journal} of {} org(s) new for partner {partner:?} in {} \
             (running gateways pick them up on SIGHUP)",
            orgs.len(),
            settings.learned_orgs_file.display()
        );
        return ExitCode::SUCCESS;
    };
    let count = orgs.len();
    match with_redis(redis, |shared| async move {
        shared.import(partner, &orgs).await.ok_or("cannot write to redis")
    }) {
        Ok(new) => {
            println!("{new}");
            eprintln!(
                "authgate orgs import: {new} of {count} org(s) new for partner {partner:?} in redis \
                 (every replica accepts them now); {in_journal} new in {}",
                settings.learned_orgs_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate orgs import: {e} (the journal has them; replicas write them back to redis)");
            ExitCode::from(1)
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
