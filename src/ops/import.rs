//! `authgate orgs import`: orgs created before the gateway stood in front of the API, as
//! learned orgs, in Redis and the journal, all or nothing.

use std::path::Path;
use std::process::ExitCode;

use super::{org_lines, read_input, settings, unknown, with_redis, write_deadline, Failure};
use crate::config::Settings;
use crate::shared::orgs::Imported;
use crate::shared::Shared;

/// `authgate orgs import`: one org id per line from `file` (or stdin for `-`/none), blank
/// lines and `#` comments skipped; prints how many were new. All or nothing: with `[redis]`
/// the orgs go to Redis in one atomic script (refused past its deadline by Redis's clock),
/// then to the journal; if either fails, nothing stays written and the command says to run
/// it again. When the Redis write was sent and no answer came, it says the outcome is
/// unknown (exit 4). A partner the policy file does not list is refused unless
/// `allow_unknown_partner`.
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
        return into_journal_only(journal, partner, &orgs);
    };
    let count = orgs.len();
    let outcome = with_redis(redis, |shared| async move {
        let new = into_redis(&shared, partner, &orgs).await?;
        match crate::journal::import(journal, partner, &orgs) {
            Ok(_) => Ok(new.len()),
            Err(e) => {
                eprintln!("authgate orgs import: cannot write {}: {e}", journal.display());
                Err(take_back(&shared, partner, &new).await)
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
        Err(Failure::NothingWritten(e)) => {
            eprintln!("authgate orgs import: {e}; nothing was imported, run the import again");
            ExitCode::from(1)
        }
        Err(Failure::Unknown(e)) => unknown("orgs import", &e),
    }
}

/// Without `[redis]`: the journal only (running gateways pick the orgs up on SIGHUP).
fn into_journal_only(journal: &Path, partner: &str, orgs: &[String]) -> ExitCode {
    match crate::journal::import(journal, partner, orgs) {
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
    }
}

/// The orgs into Redis, with a deadline by Redis's clock; the ones that were new.
async fn into_redis(shared: &Shared, partner: &str, orgs: &[String]) -> Result<Vec<String>, Failure> {
    let deadline = write_deadline(shared).await?;
    match shared.import(partner, orgs, deadline).await {
        Ok(Imported::Done(new)) => Ok(new),
        Ok(Imported::Late) => Err(Failure::NothingWritten(
            "the write reached redis after its deadline and redis refused it".into(),
        )),
        Err(fault) => Err(Failure::of_write(fault, "the orgs were sent to redis")),
    }
}

/// Takes back what [`into_redis`] added when the journal could not record it; says whether
/// that worked.
async fn take_back(shared: &Shared, partner: &str, new: &[String]) -> Failure {
    let deadline = match write_deadline(shared).await {
        Ok(d) => d,
        Err(_) => {
            return Failure::Unknown(
                "the orgs it added to redis could not be taken back (they are harmless there)".into(),
            )
        }
    };
    match shared.unimport(partner, new, deadline).await {
        Ok(Imported::Done(_)) => Failure::NothingWritten("the orgs it added to redis were taken back".into()),
        _ => {
            Failure::Unknown("the orgs it added to redis may not have been taken back (they are harmless there)".into())
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
