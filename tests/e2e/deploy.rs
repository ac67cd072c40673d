//! The operator pack under `deploy/`: the Prometheus alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`), every alert has a unit test, and every
//! Grafana dashboard expression parses (as a recording rule given to `promtool check
//! rules`) and names only metrics that `src/metrics.rs` registers.
//!
//! promtool comes with Debian's `prometheus` package (CI installs it). Without it these
//! tests fail, naming the package: the operator pack is part of what ships.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common;
use crate::common::{read_repo, repo_path, TempDir, ROOT};
use serde_json::Value;

const RULES: &str = "deploy/prometheus/authgate-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/authgate-alerts_test.yml";
const DASHBOARD: &str = "deploy/grafana/authgate-dashboard.json";

/// Runs `promtool <args>` in `dir`; panics (naming the package) when promtool is missing,
/// and with promtool's output when it fails.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = match Command::new("promtool").args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run promtool ({e}): install Debian's `prometheus` package \
             (sudo apt-get install prometheus), which provides it; CI (.ci/run) does"
        ),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Metric names `src/metrics.rs` registers, with the `_bucket`/`_sum`/`_count` series of
/// its histograms.
fn registered_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, m) in common::registered_metrics(&read_repo("src/metrics.rs")) {
        if m.histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    assert!(names.contains("authgate_requests_total"), "{names:?}");
    assert!(names.contains("authgate_request_duration_seconds_bucket"), "{names:?}");
    names
}

/// Every `authgate_*` name in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("authgate_") {
        let prev = text[..i].chars().next_back();
        if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.insert(
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect(),
        );
    }
    out
}

fn assert_registered(what: &str, text: &str) {
    let registered = registered_metrics();
    let used = metric_names_in(text);
    assert!(!used.is_empty(), "{what} names no authgate metric");
    let unknown: Vec<_> = used.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "{what} names metrics src/metrics.rs does not register: {unknown:?}"
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = promtool(Path::new(ROOT), &["check", "rules", RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    // rule_files in the test file are relative to it
    let out = promtool(
        &repo_path("deploy/prometheus"),
        &["test", "rules", "authgate-alerts_test.yml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_unit_test_and_names_registered_metrics() {
    let rules = read_repo(RULES);
    let tests = read_repo(RULE_TESTS);
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::trim)
        .collect();
    for required in [
        "AuthgateDown",
        "AuthgateHigh5xxRatio",
        "AuthgateUpstreamErrors",
        "AuthgateDenialSpike",
        "AuthgateRateLimitSaturation",
        "AuthgateReloadFailed",
        "AuthgateTLSCertExpiringSoon",
    ] {
        assert!(alerts.contains(&required), "{required} missing from {RULES}");
    }
    for a in &alerts {
        assert!(
            tests.contains(&format!("alertname: {a}\n")),
            "{a} has no unit test in {RULE_TESTS}"
        );
    }
    assert_registered(RULES, &rules);
    assert_registered(RULE_TESTS, &tests);
}

/// Grafana's variables, replaced by values promtool accepts.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${job}", ".+")
        .replace("$job", ".+")
        .replace("${instance}", ".+")
        .replace("$instance", ".+")
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[test]
fn dashboard_expressions_parse_and_name_registered_metrics() {
    let text = read_repo(DASHBOARD);
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dash["panels"], &mut exprs);
    assert!(exprs.len() >= 10, "only {} expressions", exprs.len());

    // the five areas are there
    let all = exprs.join("\n");
    for needle in [
        "authgate_requests_total",
        "authgate_denied_total",
        "authgate_request_duration_seconds_bucket",
        "authgate_upstream_duration_seconds_bucket",
        "authgate_rate_limited_total",
    ] {
        assert!(all.contains(needle), "no panel uses {needle}");
    }

    // every expression parses: promtool checks them as recording rules
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = substitute(e);
        assert!(!e.contains('$'), "an unknown Grafana variable is left in {e}");
        rules.push_str(&format!(
            "      - record: dashboard_expr_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = TempDir::new("dashboard");
    dir.write("dashboard-rules.yml", rules.as_bytes());
    let out = promtool(&dir.path, &["check", "rules", "dashboard-rules.yml"]);
    assert!(out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");

    // panels and variables name only registered metrics (and Prometheus' own `up`)
    assert_registered(DASHBOARD, &text);
    for e in &exprs {
        assert!(
            e.contains("authgate_") || e.starts_with("up{"),
            "{e} reads no authgate metric"
        );
    }

    // every panel reads the dashboard's datasource variable
    let mut datasources = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            datasources.push((p["title"].clone(), p["datasource"]["uid"].clone()));
        }
    }
    for (title, uid) in datasources {
        assert_eq!(uid, "${datasource}", "panel {title}");
    }
}
