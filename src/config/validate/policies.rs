//! `[policies]` and `[[limits]]` (docs/reference.md#policies, #limits): the policy file, the
//! learned-orgs journal beside it, and the named rate limits routes and partners refer to.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use super::Ctx;
use crate::config::file::{LimitFile, PoliciesFile};
use crate::policy::rate_limit::LimitDef;

/// `[policies]`: the policy file and the learned-orgs journal (default: beside the policy
/// file, `<file>.orgs.jsonl`).
pub(super) fn policies(c: &mut Ctx<'_, '_>, p: &PoliciesFile) -> (PathBuf, PathBuf) {
    let policy_file = c.path(p.file.get_ref());
    if p.file.get_ref().is_empty() {
        c.r.at(p.file.span(), "policies.file must name the policy file");
    }
    let learned_orgs_file = match &p.learned_orgs_file {
        Some(f) => c.path(f),
        None => {
            let mut s = policy_file.clone().into_os_string();
            s.push(".orgs.jsonl");
            PathBuf::from(s)
        }
    };
    (policy_file, learned_orgs_file)
}

/// `[[limits]]`: unique, non-empty names, each with 1..=u32::MAX requests per minute.
pub(super) fn limits(c: &mut Ctx<'_, '_>, list: &[LimitFile]) -> Vec<LimitDef> {
    let mut limits: Vec<LimitDef> = Vec::new();
    for l in list {
        let name = l.name.get_ref();
        if name.is_empty() {
            c.r.at(l.name.span(), "limits: name must not be empty");
        } else if limits.iter().any(|d| &*d.name == name) {
            c.r.at(l.name.span(), format!("limits: {name:?} is defined twice"));
        }
        let per_minute = u32::try_from(*l.per_minute.get_ref()).ok().and_then(NonZeroU32::new);
        match per_minute {
            Some(per_minute) => limits.push(LimitDef {
                name: Arc::from(name.as_str()),
                per_minute,
            }),
            None => c.r.at(
                l.per_minute.span(),
                format!("limits: {name:?} per_minute must be 1..4294967295"),
            ),
        }
    }
    limits
}
