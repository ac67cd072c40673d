//! Operator commands of CONTRACT §10: `authgate revoke` / `unrevoke` (shared revocations)
//! and `authgate orgs import` / `orgs list` (orgs created before the gateway stood in front
//! of the API). Each returns the process exit code and prints what it did.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::config::Settings;
use crate::policy::principal::Principal;

/// `authgate revoke` (`revoked = true`) and `authgate unrevoke`.
pub fn revoke(config: &Path, principal: &Principal, key_id: &str, revoked: bool) -> ExitCode {
    let Some(settings) = settings(config) else {
        return ExitCode::from(1);
    };
    let verb = if revoked { "revoke" } else { "unrevoke" };
    eprintln!(
        "authgate {verb}: shared revocations need [redis] in {} (CONTRACT §10). Without it, \
         {} the key id {key_id:?} {} revoked_keys of the [[{}]] entry with id {:?} in {} and \
         send SIGHUP to each gateway.",
        config.display(),
        if revoked { "add" } else { "remove" },
        if revoked { "to" } else { "from" },
        principal.kind().as_str(),
        &**principal.id(),
        settings.policy_file.display()
    );
    ExitCode::from(1)
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
    match crate::journal::import(&settings.learned_orgs_file, partner, &orgs) {
        Ok(new) => {
            println!("{new}");
            eprintln!(
                "authgate orgs import: {new} of {} org(s) new for partner {partner:?} in {} \
                 (running gateways pick them up on SIGHUP)",
                orgs.len(),
                settings.learned_orgs_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "authgate orgs import: cannot write {}: {e}",
                settings.learned_orgs_file.display()
            );
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
        Ok(orgs) => {
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
