//! `partners.toml` (file structs) -> [`Directory`]: partners, orgs and API keys, every
//! problem with its line. Read at start, by `check`, and on every SIGHUP.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::file::{ApiKeyFile, OrgFile, PartnerFile, PolicyFile};
use super::problem::{Problems, Reporter};
use super::settings::Settings;
use super::validate::ip_list;
use crate::policy::directory::{ApiKeyEntry, Directory, LimitOverride, OrgPolicy, PartnerPolicy};
use crate::policy::identity::id_problem;

/// Validates policy-file text (separate from reading it, for tests and the fuzz targets).
pub fn parse_directory(path: &Path, text: &str, settings: &Settings) -> Result<Directory, Problems> {
    let mut r = Reporter::new(path, text);
    let file: PolicyFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            r.parse_error(&e);
            return Err(r.finish());
        }
    };
    let partners = partners(&mut r, &file.partner, settings);
    let orgs = orgs(&mut r, &file.org);
    let api_keys = api_keys(&mut r, &file.api_key);
    if r.has_problems() {
        return Err(r.finish());
    }
    Ok(Directory::new(partners, orgs, api_keys))
}

/// An entry's `id`: not empty, usable as a header value, unique among its `kind`
/// (`partner`, `org`, `api_key`).
fn check_id(r: &mut Reporter<'_>, kind: &str, id: &Spanned<String>, seen: &mut HashSet<String>) {
    let text = id.get_ref();
    if text.is_empty() {
        r.at(id.span(), format!("{kind}: id must not be empty"));
    } else if let Some(why) = id_problem(text) {
        r.at(id.span(), format!("{kind} {text:?}: the id {why}"));
    } else if !seen.insert(text.clone()) {
        r.at(id.span(), format!("{kind} {text:?} is listed twice"));
    }
}

/// `[[partner]]` entries.
fn partners(r: &mut Reporter<'_>, list: &[Spanned<PartnerFile>], settings: &Settings) -> Vec<PartnerPolicy> {
    let mut seen = HashSet::new();
    let mut partners = Vec::new();
    for p in list {
        let p = p.get_ref();
        check_id(r, "partner", &p.id, &mut seen);
        let id = p.id.get_ref();
        let overrides = p
            .limits
            .as_ref()
            .map(|l| limit_overrides(r, id, l.get_ref(), l.span(), settings))
            .unwrap_or_default();
        let ip_allow_list = p
            .ip_allow_list
            .as_ref()
            .map(|l| ip_list(r, l, &format!("partner {id:?} ip_allow_list")));
        partners.push(PartnerPolicy {
            id: Arc::from(id.as_str()),
            active: p.active,
            ip_allow_list: ip_allow_list.filter(|s| !s.is_empty()),
            revoked_keys: p.revoked_keys.iter().map(|k| k.as_str().into()).collect(),
            orgs: p.orgs.iter().map(|o| o.as_str().into()).collect(),
            limit_overrides: overrides,
        });
    }
    partners
}

/// A partner's `limits = { name = per_minute }`: names from `[[limits]]`, 1..=u32::MAX.
fn limit_overrides(
    r: &mut Reporter<'_>,
    id: &str,
    limits: &std::collections::BTreeMap<String, Spanned<i64>>,
    table: Range<usize>,
    settings: &Settings,
) -> Vec<LimitOverride> {
    let mut overrides = Vec::new();
    for (name, value) in limits {
        let Some(limit) = settings.limits.iter().position(|l| &*l.name == name) else {
            r.at(
                table.clone(),
                format!("partner {id:?}: limit {name:?} is not defined in [[limits]]"),
            );
            continue;
        };
        match u32::try_from(*value.get_ref()) {
            Ok(per_minute) if per_minute > 0 => overrides.push(LimitOverride { limit, per_minute }),
            _ => r.at(
                value.span(),
                format!("partner {id:?}: limit {name:?} must be 1..4294967295 per minute"),
            ),
        }
    }
    overrides
}

/// `[[org]]` entries.
fn orgs(r: &mut Reporter<'_>, list: &[Spanned<OrgFile>]) -> Vec<OrgPolicy> {
    let mut seen = HashSet::new();
    let mut orgs = Vec::new();
    for o in list {
        let o = o.get_ref();
        check_id(r, "org", &o.id, &mut seen);
        let id = o.id.get_ref();
        let ip_allow_list = o
            .ip_allow_list
            .as_ref()
            .map(|l| ip_list(r, l, &format!("org {id:?} ip_allow_list")));
        orgs.push(OrgPolicy {
            id: Arc::from(id.as_str()),
            active: o.active,
            ip_allow_list: ip_allow_list.filter(|s| !s.is_empty()),
            revoked_keys: o.revoked_keys.iter().map(|k| k.as_str().into()).collect(),
        });
    }
    orgs
}

/// `[[api_key]]` entries: an org id and the SHA-256 of the key, each digest listed once.
fn api_keys(r: &mut Reporter<'_>, list: &[Spanned<ApiKeyFile>]) -> Vec<ApiKeyEntry> {
    let mut seen = HashSet::new();
    let mut api_keys: Vec<ApiKeyEntry> = Vec::new();
    for k in list {
        let k = k.get_ref();
        check_id(r, "api_key", &k.id, &mut seen);
        let id = k.id.get_ref();
        if k.org.get_ref().is_empty() {
            r.at(k.org.span(), format!("api_key {id:?}: org must not be empty"));
        } else if let Some(why) = id_problem(k.org.get_ref()) {
            r.at(k.org.span(), format!("api_key {id:?}: org {why}"));
        }
        let digest = hex::decode(k.sha256.get_ref())
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok());
        let Some(digest) = digest else {
            r.at(
                k.sha256.span(),
                format!("api_key {id:?}: sha256 must be 64 hex characters (see `authgate hash-key`)"),
            );
            continue;
        };
        if api_keys.iter().any(|e| e.digest == digest) {
            r.at(
                k.sha256.span(),
                format!("api_key {id:?}: the same key digest is listed twice"),
            );
        }
        api_keys.push(ApiKeyEntry {
            id: Arc::from(id.as_str()),
            org: Arc::from(k.org.get_ref().as_str()),
            disabled: k.disabled,
            digest,
        });
    }
    api_keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::settings_from_text;

    #[test]
    fn ids_that_cannot_be_header_values_are_refused() {
        let config = "[server]\nlisten = \"127.0.0.1:8080\"\n[upstream]\naddress = \"127.0.0.1:3000\"\n\
                      [policies]\nfile = \"partners.toml\"\n\
                      [[routes]]\nname = \"health\"\npath = \"/health\"\nauth = \"none\"\n";
        let (settings, problems) = settings_from_text(Path::new("/etc/authgate/authgate.toml"), config);
        assert!(problems.is_empty(), "{problems}");
        let digest = "0".repeat(64);
        let long = "o".repeat(257);
        let policy = format!(
            "[[partner]]\nid = \"acme\\r\\nX-Evil: 1\"\n[[org]]\nid = \"{long}\"\n\
             [[api_key]]\nid = \"k\\u0007\"\norg = \"o\\n\"\nsha256 = \"{digest}\"\n"
        );
        let err = parse_directory(Path::new("/etc/authgate/partners.toml"), &policy, &settings.unwrap())
            .unwrap_err()
            .to_string();
        for want in [
            "partners.toml:2: partner \"acme\\r\\nX-Evil: 1\": the id contains a control character",
            "partners.toml:4: org \"",
            "the id is longer than 256 bytes",
            "partners.toml:6: api_key \"k\\u{7}\": the id contains a control character",
            "partners.toml:7: api_key \"k\\u{7}\": org contains a control character",
        ] {
            assert!(err.contains(want), "{want:?} in:\n{err}");
        }
    }
}
