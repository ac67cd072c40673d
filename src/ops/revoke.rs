//! `authgate revoke` / `unrevoke`: a record in the shared revocation hash, then the wait for
//! every replica's acknowledgement in the record's epoch.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{settings, unknown, with_redis, write_deadline, Failure};
use crate::config::Settings;
use crate::policy::principal::{Principal, PrincipalKind};
use crate::shared::announce::{verdicts, Announcement, RECENT};
use crate::shared::revocations::Stored;
use crate::shared::view::Record;
use crate::shared::Shared;

/// Exit code of `revoke` when the record is stored but some replica did not apply it in
/// time, or no replica announced itself at all.
const SOME_NOT_APPLIED: u8 = 3;

/// A stored record, its number and epoch, and the replicas' announcements read last.
struct Applied {
    record: Record,
    epoch: String,
    seq: u64,
    replicas: Option<Vec<Announcement>>,
}

/// `authgate revoke` (`revoked = true`) and `authgate unrevoke`: a record in the shared
/// revocation hash, published to every replica; then waits up to `wait` until every replica
/// announced in the last 10 s has applied it in its epoch, and prints one line per replica.
/// Exit 0: all applied; 3: stored, but some did not (yet), or none announced itself; 1:
/// nothing stored (Redis unreachable or refusing, an unknown principal, a newer record in
/// force); 4: the write was sent and no answer came, so it may or may not have landed.
pub fn revoke(
    config: &Path,
    principal: &Principal,
    key_id: &str,
    revoked: bool,
    wait: Duration,
    allow_unknown: bool,
) -> ExitCode {
    let verb = if revoked { "revoke" } else { "unrevoke" };
    let Some(settings) = settings(config) else {
        return ExitCode::from(1);
    };
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
    if !allow_unknown && !principal_listed(verb, &settings, principal) {
        return ExitCode::from(1);
    }
    let prefix = redis.key_prefix.clone();
    let outcome = with_redis(redis, |shared| async move {
        let stored = store(&shared, principal, key_id, revoked).await?;
        let Some((record, epoch, seq)) = stored else {
            return Ok(None);
        };
        let replicas = wait_for_replicas(&shared, &epoch, seq, wait).await;
        Ok(Some(Applied {
            record,
            epoch,
            seq,
            replicas,
        }))
    });
    match outcome {
        Ok(Some(applied)) => report(verb, &applied, wait, &prefix),
        Ok(None) => {
            eprintln!("authgate {verb}: a newer record of this key is in force; nothing changed");
            ExitCode::from(1)
        }
        Err(Failure::NothingWritten(e)) => {
            eprintln!("authgate {verb}: {e}; nothing was stored");
            ExitCode::from(1)
        }
        Err(Failure::Unknown(e)) => unknown(verb, &e),
    }
}

/// Stores the record with a deadline by Redis's clock; `None` when a newer record of the
/// key is in force (nothing changed).
async fn store(
    shared: &Shared,
    principal: &Principal,
    key_id: &str,
    revoked: bool,
) -> Result<Option<(Record, String, u64)>, Failure> {
    let current = shared
        .current(principal, key_id)
        .await
        .ok_or_else(|| Failure::NothingWritten("cannot read the revocation hash".into()))?;
    let mut record = Record::new(principal, key_id, revoked);
    if let Some(c) = current {
        record.at = record.at.max(c.at + 1); // an immediate unrevoke still wins
    }
    let deadline = write_deadline(shared).await?;
    let stored = shared
        .store(std::slice::from_ref(&record), deadline)
        .await
        .map_err(|f| Failure::of_write(f, "the revocation was sent"))?;
    match stored {
        Stored::Late => Err(Failure::NothingWritten(
            "the write reached redis after its deadline and redis refused it".into(),
        )),
        Stored::InForce { epoch, mut outcomes } => match outcomes.pop() {
            Some((stored, seq)) if seq > 0 && stored.revoked == revoked => Ok(Some((stored, epoch, seq))),
            _ => Ok(None),
        },
    }
}

/// Whether the policy file lists the principal (a revocation for a typo would protect
/// nothing); says why not on stderr. An org counts as listed when the file names it
/// anywhere: an `[[org]]`, a partner's `orgs`, an `[[api_key]]`'s `org`.
fn principal_listed(verb: &str, settings: &Settings, principal: &Principal) -> bool {
    let (kind, id) = (principal.kind(), &**principal.id());
    match crate::config::load::load_directory(settings) {
        Ok(dir) => {
            let listed = match kind {
                PrincipalKind::Partner => dir.partner(id).is_some(),
                PrincipalKind::Org => dir.lists_org(id),
            };
            if !listed {
                eprintln!(
                    "authgate {verb}: {} {id:?} is not in {}; nothing was stored (--allow-unknown stores it anyway)",
                    kind.as_str(),
                    settings.policy_file.display()
                );
            }
            listed
        }
        Err(problems) => {
            eprintln!("authgate {verb}: cannot read the policy file:\n{problems}");
            false
        }
    }
}

/// Polls the replicas' announcements until every one has applied record `seq` of `epoch`
/// or `wait` passed; the last list read (`None`: it could not be read).
async fn wait_for_replicas(shared: &Shared, epoch: &str, seq: u64, wait: Duration) -> Option<Vec<Announcement>> {
    let deadline = Instant::now() + wait;
    loop {
        let replicas = shared.replicas().await;
        let all = replicas
            .as_ref()
            .is_some_and(|r| !r.is_empty() && verdicts(r, epoch, seq).iter().all(|(_, applied)| *applied));
        if all || Instant::now() >= deadline {
            return replicas;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints one line per replica and the summary; the exit code.
fn report(verb: &str, applied: &Applied, wait: Duration, prefix: &str) -> ExitCode {
    let (what, seq) = (applied.record.describe(), applied.seq);
    let Some(replicas) = &applied.replicas else {
        eprintln!("authgate {verb}: stored {what} (record {seq}), but the replicas' announcements could not be read");
        return ExitCode::from(SOME_NOT_APPLIED);
    };
    if replicas.is_empty() {
        eprintln!(
            "authgate {verb}: stored {what} (record {seq}); no replica has announced itself under {prefix}: \
             nothing is known to have applied it"
        );
        return ExitCode::from(SOME_NOT_APPLIED);
    }
    let verdicts = verdicts(replicas, &applied.epoch, seq);
    for (id, ok) in &verdicts {
        println!("{id} {}", if *ok { "applied" } else { "NOT applied" });
    }
    let done = verdicts.iter().filter(|(_, a)| *a).count();
    let all = done == verdicts.len();
    eprintln!(
        "authgate {verb}: {verb}d {what} (record {seq}); {done} of {} replica(s) announced in the last {}s applied it{}",
        verdicts.len(),
        RECENT.as_secs(),
        if all {
            String::new()
        } else {
            format!(" within {wait:?}; the record stays stored and the others apply it when they can")
        }
    );
    if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_NOT_APPLIED)
    }
}
