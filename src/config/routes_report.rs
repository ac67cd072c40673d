//! `authgate routes --config PATH` (docs/reference.md#commands): the compiled route table as
//! the gateway will run it, hand-written `[[routes]]` first, then every spec operation, with
//! what step 7a validates on each. What an operator reads to see what a spec turned into.

use super::Settings;
use crate::policy::routes::{AuthKind, Route};
use crate::policy::spec_routes::ValidateMode;

const HEADER: [&str; 8] = [
    "NAME",
    "METHOD",
    "PATH",
    "AUTH",
    "LIMITS",
    "ORG_PARAM",
    "UPSTREAM",
    "VALIDATES",
];

/// The table, one route per line, columns aligned.
pub fn render(settings: &Settings) -> String {
    let rows: Vec<[String; 8]> = settings.fixed.routes.iter().map(|r| row(settings, r)).collect();
    let mut widths = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for cells in std::iter::once(HEADER.map(String::from)).chain(rows) {
        let line: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn row(settings: &Settings, r: &Route) -> [String; 8] {
    let dash = || "-".to_string();
    let limits: Vec<&str> = r
        .limits
        .iter()
        .filter_map(|i| settings.limits.get(*i).map(|l| &*l.name))
        .collect();
    let cluster = settings.route_upstream(r.index).cluster;
    let validates = match settings.fixed.routes.operation(r.index) {
        None => dash(),
        Some((_, ValidateMode::Off)) => "off".into(),
        Some((op, _)) if op.validation_off() => "off".into(),
        Some((op, mode)) => format!(
            "{}: {}",
            if mode == ValidateMode::Enforce {
                "enforce"
            } else {
                "report"
            },
            op.summary()
        ),
    };
    [
        r.name.to_string(),
        r.method.clone().unwrap_or_else(|| "*".into()),
        r.pattern.source().to_string(),
        auth(r.auth).into(),
        if limits.is_empty() { dash() } else { limits.join(",") },
        r.org_param
            .and_then(|i| r.pattern.param_name(i))
            .map_or_else(dash, str::to_string),
        settings
            .upstreams
            .get(cluster)
            .map_or_else(dash, |c| c.name.to_string()),
        validates,
    ]
}

fn auth(a: AuthKind) -> &'static str {
    match a {
        AuthKind::None => "none",
        AuthKind::Partner => "partner",
        AuthKind::Org => "org",
        AuthKind::ApiKey => "api_key",
    }
}
