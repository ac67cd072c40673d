//! Drift guard for the documentation: `docs/reference.md` must describe every config key the
//! file structs accept, every metric `src/metrics.rs` registers (with its labels), every
//! denial reason and every command, so adding one without documenting it fails here. Plain
//! file reading, no network. That the shipped, annotated `config/` files pass `authgate check`
//! is `tests/e2e/shipped.rs` (`shipped_config_passes_check`); the worked "Putting it together"
//! example of the reference passes `check` here.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use crate::common;
use crate::common::{read_repo, ROOT};

const REFERENCE: &str = "docs/reference.md";

// ---------------------------------------------------------------------------------------
// The config keys, from the serde structs in src/config/file.rs
// ---------------------------------------------------------------------------------------

/// One field of a serde struct: its TOML key and its Rust type.
struct Field {
    key: String,
    ty: String,
    flatten: bool,
}

/// Applies a serde `rename_all` rule to a snake_case field name.
fn rename_all(rule: Option<&str>, field: &str) -> String {
    let words: Vec<&str> = field.split('_').filter(|w| !w.is_empty()).collect();
    let cap = |w: &str| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    match rule {
        None | Some("snake_case") => field.to_string(),
        Some("kebab-case") => words.join("-"),
        Some("lowercase") => field.replace('_', ""),
        Some("UPPERCASE") => field.replace('_', "").to_ascii_uppercase(),
        Some("SCREAMING_SNAKE_CASE") => field.to_ascii_uppercase(),
        Some("SCREAMING-KEBAB-CASE") => words.join("-").to_ascii_uppercase(),
        Some("PascalCase") => words.iter().map(|w| cap(w)).collect(),
        Some("camelCase") => {
            let pascal: String = words.iter().map(|w| cap(w)).collect();
            let mut c = pascal.chars();
            c.next()
                .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
        Some(other) => panic!("tests/e2e/docs.rs does not know serde rename_all = {other:?}; teach it"),
    }
}

/// The string value of `name = "..."` inside a `#[serde(...)]` attribute, if any.
fn attr_value(attr: &str, name: &str) -> Option<String> {
    let mut rest = attr;
    while let Some(i) = rest.find(name) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + name.len()..].trim_start();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && after.starts_with('=') {
            let value = after[1..].trim_start().strip_prefix('"')?;
            return value.split('"').next().map(str::to_string);
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// Every `struct` with named fields in `src`, by name, with its fields as serde reads them
/// (honouring `rename`, `rename_all`, `skip`, `flatten`).
fn serde_structs(src: &str) -> BTreeMap<String, Vec<Field>> {
    let mut out = BTreeMap::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut lines = src.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("#[") {
            attrs.push(line.to_string());
            continue;
        }
        if line.starts_with("//") || line.is_empty() {
            continue;
        }
        let Some(head) = line.split("struct ").nth(1).filter(|_| line.ends_with('{')) else {
            attrs.clear();
            continue;
        };
        let name: String = head
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let rule = attrs
            .iter()
            .filter(|a| a.starts_with("#[serde("))
            .find_map(|a| attr_value(a, "rename_all"));
        attrs.clear();
        let mut fields = Vec::new();
        let mut field_attrs: Vec<String> = Vec::new();
        while let Some(line) = lines.next() {
            if line.starts_with('}') {
                break;
            }
            if line.starts_with("#[") {
                field_attrs.push(line.to_string());
                continue;
            }
            if line.starts_with("//") || line.is_empty() {
                continue;
            }
            let decl = line
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub(super) ")
                .trim_start_matches("pub ");
            let Some((ident, ty)) = decl.split_once(':') else {
                field_attrs.clear();
                continue;
            };
            let mut ty = ty.trim().to_string();
            while !ty.ends_with(',') {
                match lines.next() {
                    Some(more) => ty.push_str(more),
                    None => break,
                }
            }
            let serde: Vec<&String> = field_attrs.iter().filter(|a| a.starts_with("#[serde(")).collect();
            let skip = serde.iter().any(|a| {
                a.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == "skip" || w == "skip_deserializing")
            });
            let flatten = serde.iter().any(|a| a.contains("flatten"));
            let ident = ident.trim().trim_start_matches("r#");
            let key = serde
                .iter()
                .find_map(|a| attr_value(a, "rename"))
                .unwrap_or_else(|| rename_all(rule.as_deref(), ident));
            field_attrs.clear();
            if !skip {
                fields.push(Field { key, ty, flatten });
            }
        }
        out.insert(name, fields);
    }
    out
}

/// One TOML table of a config file: its path (`server.tls`), whether it is an array of
/// tables (`[[routes]]`), and its plain keys.
struct Table {
    path: String,
    array: bool,
    keys: Vec<String>,
}

impl Table {
    fn heading(&self) -> String {
        if self.array {
            format!("[[{}]]", self.path)
        } else {
            format!("[{}]", self.path)
        }
    }
}

/// The struct a field's type holds, if it is one of `structs` (`Option<Spanned<TlsFile>>`
/// -> `TlsFile`), and whether it sits in a `Vec` (an array of tables).
fn nested<'a>(ty: &str, structs: &'a BTreeMap<String, Vec<Field>>) -> Option<(&'a str, bool)> {
    let idents: Vec<&str> = ty
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let at = idents.iter().position(|w| structs.contains_key(*w))?;
    let (name, _) = structs.get_key_value(idents[at])?;
    Some((name.as_str(), idents[..at].contains(&"Vec")))
}

/// Walks the struct tree from `root`, collecting every table with its keys.
fn tables(structs: &BTreeMap<String, Vec<Field>>, root: &str, path: &str, array: bool, out: &mut Vec<Table>) {
    let mut table = Table {
        path: path.to_string(),
        array,
        keys: Vec::new(),
    };
    let mut children = Vec::new();
    collect(structs, root, &mut table.keys, &mut children);
    out.push(table);
    for (key, name, is_array) in children {
        let child = if path.is_empty() { key } else { format!("{path}.{key}") };
        tables(structs, &name, &child, is_array, out);
    }
}

fn collect(
    structs: &BTreeMap<String, Vec<Field>>,
    name: &str,
    keys: &mut Vec<String>,
    children: &mut Vec<(String, String, bool)>,
) {
    for f in structs.get(name).map(Vec::as_slice).unwrap_or_default() {
        match nested(&f.ty, structs) {
            Some((inner, _)) if f.flatten => collect(structs, inner, keys, children),
            Some((inner, is_array)) => children.push((f.key.clone(), inner.to_string(), is_array)),
            None => keys.push(f.key.clone()),
        }
    }
}

/// The sections of `doc` whose heading contains `` `needle` ``, each up to the next heading
/// of the same or a higher level, joined.
fn sections(doc: &str, needle: &str) -> Option<String> {
    let wanted = format!("`{needle}`");
    let lines: Vec<&str> = doc.lines().collect();
    let level = |l: &str| l.starts_with('#').then(|| l.chars().take_while(|c| *c == '#').count());
    let mut found: Option<String> = None;
    for (i, line) in lines.iter().enumerate() {
        let Some(depth) = level(line) else { continue };
        if !line.contains(&wanted) {
            continue;
        }
        let end = lines[i + 1..]
            .iter()
            .position(|l| level(l).is_some_and(|d| d <= depth))
            .map_or(lines.len(), |p| i + 1 + p);
        found
            .get_or_insert_with(String::new)
            .push_str(&lines[i..end].join("\n"));
    }
    found
}

/// Whether `section` has a table row for `name`: a line starting with ``| `name` ``.
fn has_row(section: &str, name: &str) -> bool {
    let cell = format!("| `{name}`");
    section.lines().any(|l| l.trim_start().starts_with(&cell))
}

/// The tables of one config file, from its root struct.
fn config_tables(root: &str) -> Vec<Table> {
    let structs = serde_structs(&read_repo("src/config/file.rs"));
    assert!(structs.contains_key(root), "src/config/file.rs has no struct {root}");
    let mut out = Vec::new();
    tables(&structs, root, "", false, &mut out);
    out
}

fn missing_keys(root: &str) -> Vec<String> {
    let doc = read_repo(REFERENCE);
    let mut missing = Vec::new();
    for t in config_tables(root) {
        if t.path.is_empty() {
            for key in &t.keys {
                if !doc.contains(&format!("`{key}`")) {
                    missing.push(format!("top-level key `{key}`"));
                }
            }
            continue;
        }
        let heading = t.heading();
        let Some(section) = sections(&doc, &heading) else {
            missing.push(format!("a heading with `{heading}` (keys {:?})", t.keys));
            continue;
        };
        for key in &t.keys {
            if !has_row(&section, key) {
                missing.push(format!(
                    "`{heading}` key `{key}` (a row ``| `{key}` |`` under that heading)"
                ));
            }
        }
    }
    missing
}

#[test]
fn the_struct_parser_sees_the_known_keys() {
    let tables = config_tables("GatewayFile");
    let find = |p: &str| tables.iter().find(|t| t.path == p).map(|t| t.keys.clone());
    assert!(find("server").is_some_and(|k| k.contains(&"listen".to_string())));
    assert!(find("server.tls").is_some_and(|k| k.contains(&"client_ca_file".to_string())));
    assert!(find("jwt.keys").is_some_and(|k| k.contains(&"secret_env".to_string())));
    assert!(tables.iter().any(|t| t.path == "routes" && t.array));
    let policy = config_tables("PolicyFile");
    assert!(policy
        .iter()
        .any(|t| t.path == "api_key" && t.array && t.keys.contains(&"sha256".into())));
    // serde attributes
    let s = serde_structs(
        "#[serde(rename_all = \"kebab-case\")]\nstruct A {\n    pub(crate) max_body: u64,\n    #[serde(rename = \"x\")]\n    y: u8,\n    #[serde(skip)]\n    z: u8,\n}\n",
    );
    let keys: Vec<&str> = s["A"].iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["max-body", "x"]);
}

/// Fails naming every key of `file` (read into the serde struct `root`) the reference lacks.
fn assert_keys_documented(root: &str, file: &str) {
    let missing = missing_keys(root);
    assert!(
        missing.is_empty(),
        "{REFERENCE} does not document these {file} keys (src/config/file.rs has them):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_gateway_config_key_is_in_the_reference() {
    assert_keys_documented("GatewayFile", "authgate.toml");
}

#[test]
fn every_policy_file_key_is_in_the_reference() {
    assert_keys_documented("PolicyFile", "partners.toml");
}

// ---------------------------------------------------------------------------------------
// Metrics, from src/metrics.rs (and src/shared, where the Redis metrics are declared)
// ---------------------------------------------------------------------------------------

#[test]
fn every_registered_metric_and_label_is_in_the_reference() {
    let src = read_repo("src/metrics.rs");
    // the unit tests at the end quote rendered samples, not registrations
    let src = src.split("#[cfg(test)]").next().unwrap_or_default();
    let metrics: BTreeMap<String, BTreeSet<String>> = common::registered_metrics(src)
        .into_iter()
        .map(|(name, m)| (name, m.labels))
        .collect();
    assert!(
        metrics
            .get("authgate_requests_total")
            .is_some_and(|l| l.contains("route") && l.contains("status")),
        "the metrics parser lost its way: {metrics:?}"
    );
    let doc = read_repo(REFERENCE);
    let mut missing = Vec::new();
    for (name, labels) in &metrics {
        let cell = format!("| `{name}`");
        let rows: Vec<&str> = doc.lines().filter(|l| l.trim_start().starts_with(&cell)).collect();
        if rows.is_empty() {
            missing.push(format!("metric `{name}` (a row ``| `{name}` |``)"));
            continue;
        }
        for label in labels {
            if !rows.iter().any(|r| r.contains(&format!("`{label}`"))) {
                missing.push(format!("label `{label}` of metric `{name}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{REFERENCE} does not document these (src/metrics.rs registers them):\n  {}",
        missing.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Denial reasons and commands
// ---------------------------------------------------------------------------------------

#[test]
fn every_denial_reason_is_in_the_reference() {
    let src = read_repo("src/policy/denial.rs");
    let reasons: BTreeSet<String> = src
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Reason::") && l.contains("=> \""))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    assert!(
        reasons.contains("bad_path") && reasons.contains("org_forbidden"),
        "{reasons:?}"
    );
    let doc = read_repo(REFERENCE);
    let missing: Vec<&String> = reasons.iter().filter(|r| !doc.contains(&format!("`{r}`"))).collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE} does not document these denial reasons (src/policy/denial.rs): {missing:?}"
    );
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("run authgate --help: {e}"));
    assert!(out.status.success(), "authgate {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommand names a `--help` text lists under `Commands:`.
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_is_in_the_reference_and_help_points_there() {
    let top = help(&[]);
    assert!(
        top.contains("docs/reference.md"),
        "authgate --help must point at docs/reference.md:\n{top}"
    );
    let mut commands = Vec::new();
    for c in subcommands(&top) {
        let nested = subcommands(&help(&[c.as_str()]));
        if nested.is_empty() {
            commands.push(c);
        } else {
            commands.extend(nested.into_iter().map(|n| format!("{c} {n}")));
        }
    }
    assert!(commands.iter().any(|c| c == "orgs import"), "{commands:?}");
    let doc = read_repo(REFERENCE);
    let missing: Vec<&String> = commands
        .iter()
        .filter(|c| !doc.contains(&format!("`authgate {c}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE} does not document these commands (authgate --help lists them): {missing:?}"
    );
}

/// The shell commands in the ```sh blocks of `text`, one per line.
fn sh_lines(text: &str) -> Vec<&str> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        match line.trim() {
            "```sh" => inside = true,
            "```" => inside = false,
            l if inside && !l.is_empty() && !l.starts_with('#') => out.push(l),
            _ => {}
        }
    }
    out
}

/// Fault model: the README's test command and what CI runs drift apart (a flag added to one of
/// them, the README still saying `cargo test --release` after CI added `--locked`), so a
/// newcomer's green run is not CI's. Must hold: the README's "Set up on a fresh machine"
/// section has two commands, one running `authgate demo` and one running the tests, and
/// `.ci/run` runs exactly that test command.
#[test]
fn the_readme_test_command_is_what_ci_runs() {
    let readme = read_repo("README.md");
    let setup = readme
        .split_once("\n## Set up on a fresh machine\n")
        .map(|(_, rest)| rest.split("\n#").next().unwrap_or_default())
        .expect("README.md has a '## Set up on a fresh machine' section");
    let commands = sh_lines(setup);
    assert_eq!(commands.len(), 2, "two commands set a fresh machine up: {commands:?}");
    assert!(commands[0].ends_with("cargo run --release -- demo"), "{commands:?}");
    let test = commands[1]
        .rsplit("&& ")
        .next()
        .filter(|c| c.starts_with("cargo test"))
        .unwrap_or_else(|| panic!("the second command runs the tests: {commands:?}"));
    let ci = read_repo(".ci/run");
    let runs: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains("cargo test"))
        .collect();
    assert!(
        runs.iter().any(|l| l.ends_with(&format!(" {test}"))),
        ".ci/run does not run the README's test command `{test}`: {runs:?}"
    );
}

#[test]
fn links_stay_inside_the_repository() {
    // README, docs and code comments point into docs/, never at files outside the clone.
    let mut offenders = Vec::new();
    let mut files = vec![format!("{ROOT}/README.md")];
    for dir in ["docs", "src", "config", "tests"] {
        let mut stack = vec![std::path::PathBuf::from(format!("{ROOT}/{dir}"))];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    // the test upstreams' installed packages are not ours
                    if p.file_name().is_none_or(|n| n != "node_modules") {
                        stack.push(p);
                    }
                } else if p.extension().is_some_and(|x| x == "md" || x == "rs" || x == "toml") {
                    files.push(p.to_string_lossy().into_owned());
                }
            }
        }
    }
    // spelled in pieces so that this file does not match itself
    let needles = [["sha", "red/"].concat(), ["CON", "TRACT"].concat()];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                offenders.push(format!("{f}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "links out of the repository (point into docs/reference.md instead):\n{}",
        offenders.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The worked example passes `check`
// ---------------------------------------------------------------------------------------

/// The "Putting it together" set-up (Cloudflare, TLS with origin pulls, two clusters,
/// Redis) is the page a new operator copies: it must be a config `authgate check` accepts,
/// given the files it names (made here: a certificate, a CA, an Ed25519 key, a policy).
#[test]
fn the_putting_it_together_example_passes_check() {
    let text = read_repo(REFERENCE);
    let section = text
        .split_once("## Putting it together")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{REFERENCE} has no '## Putting it together' section"));
    let toml = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(toml, _)| toml)
        .unwrap_or_else(|| panic!("'Putting it together' has no ```toml block"));
    assert!(toml.contains("[[upstreams]]") && toml.contains("[redis]") && toml.contains("[server.tls]"));

    let tmp = common::TempDir::new("docs-example");
    let dir = &tmp.path;
    for sub in ["certs", "keys"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    let write = |rel: &str, text: &str| tmp.write(rel, text.as_bytes());
    // an absolute state path would need root: keep it inside the temp dir
    let learned = "learned_orgs_file = ";
    let config: String = toml
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(learned) {
                format!("{learned}\"learned-orgs.jsonl\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write("authgate.toml", &config);
    write(
        "partners.toml",
        "[[partner]]\nid = \"acme\"\nip_allow_list = [\"203.0.113.0/24\"]\n",
    );
    common::self_signed_p256(dir, "certs/origin.key", "certs/origin.pem", "/CN=origin.example", &[]);
    std::fs::copy(dir.join("certs/origin.pem"), dir.join("certs/origin-pull-ca.pem")).unwrap_or_else(|e| panic!("{e}"));
    common::openssl(dir, &["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    common::openssl(
        dir,
        &["pkey", "-in", "ed.key", "-pubout", "-out", "keys/prod-ed-2026.pub.pem"],
    );

    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["check", "--config"])
        .arg(dir.join("authgate.toml"))
        // a closed port: check warns that Redis is unreachable, it does not fail on it
        .env("AUTHGATE_REDIS_URL", "redis://127.0.0.1:1/0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run authgate: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "check refused the 'Putting it together' example:\n{said}"
    );
}
