//! What ships beside the binary: the annotated `config/` files load, the Dockerfile names
//! things that exist, and `authgate demo` does what its curl lines promise.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::common;
use crate::common::{free_ports, request, wait_for, TempDir, BIN, DEADLINE, ROOT};

#[test]
fn shipped_config_passes_check() {
    let out = Command::new(BIN)
        .args(["check", "--config", &format!("{ROOT}/config/authgate.toml")])
        .env("AUTHGATE_DEV_SECRET", "a-dev-secret-for-the-check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn shipped_config_names_the_missing_secret() {
    let out = Command::new(BIN)
        .args(["check", "--config", &format!("{ROOT}/config/authgate.toml")])
        .env_remove("AUTHGATE_DEV_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("authgate.toml:") && text.contains("AUTHGATE_DEV_SECRET"),
        "{text}"
    );
}

#[test]
fn the_image_config_started_without_a_key_exits_1_naming_what_to_set() {
    // what `docker run authgate` does without -e AUTHGATE_DEV_SECRET or a mounted config
    let mut child = Command::new(BIN)
        .args(["--config", &format!("{ROOT}/config/authgate.toml")])
        .env_remove("AUTHGATE_DEV_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("AUTHGATE_DEV_SECRET"), "{err}");
    assert!(err.contains("/etc/authgate"), "{err}");
}

/// No private key material is tracked outside the test and bench fixtures: a committed
/// private key is a key anyone can sign with.
#[test]
fn no_private_key_material_ships() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                let skip = ["target", ".git", ".venv", "tests", "benches", "fuzz"];
                if !(dir == Path::new(ROOT) && skip.contains(&name.as_str())) {
                    walk(&path, out);
                }
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new(ROOT), &mut files);
    assert!(files.iter().any(|f| f.ends_with("config/authgate.toml")));
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(concat!("PRIVATE", " KEY-----")),
            "{} holds a PEM private key",
            f.display()
        );
        // a JWK with a private part: "d" next to "kty"
        assert!(
            !(text.contains("\"kty\"") && text.contains("\"d\"")),
            "{} holds a private JWK",
            f.display()
        );
        // DER PKCS#8 private keys start with SEQUENCE, INTEGER 0, SEQUENCE
        assert!(
            !(f.extension().is_some_and(|e| e == "der" || e == "key")),
            "{} looks like a key file",
            f.display()
        );
    }
}

/// Fault model: the Dockerfile drifts from the repository (a COPY of a path that moved, a
/// binary path cargo no longer builds, a base image argument renamed) and nothing here builds
/// it with Docker. Must hold: the build stage runs `cargo build --release --locked`, the base
/// images are build arguments defaulting to the images it always used, every COPY source
/// exists (the prebuilt stage's binary is the builder's to provide), and the config lines the
/// runtime stage edits are in the shipped config. `deploy/container-smoke.sh` builds and runs
/// the runtime stage for real.
#[test]
fn dockerfile_names_what_exists() {
    let docker = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    assert!(docker.contains("cargo build --release --locked"));
    // the binary it copies out of the build stage is the one cargo builds
    assert!(docker.contains("/src/target/release/authgate /usr/local/bin/authgate"));
    assert!(
        BIN.ends_with("target/release/authgate") || BIN.ends_with("target/debug/authgate"),
        "{BIN}"
    );
    // the base images are build arguments whose defaults are the images it always used, and
    // the runtime takes the binary from the stage BINARY_STAGE names (default: build)
    for line in [
        "ARG RUST_IMAGE=rust:1.95-bookworm",
        "ARG RUNTIME_IMAGE=debian:bookworm-slim",
        "ARG BINARY_STAGE=build",
        "FROM ${RUST_IMAGE} AS build",
        "FROM ${BINARY_STAGE} AS binary",
        "FROM ${RUNTIME_IMAGE} AS runtime",
        "COPY --from=binary /src/target/release/authgate /usr/local/bin/authgate",
    ] {
        assert!(docker.lines().any(|l| l == line), "Dockerfile lacks the line {line}");
    }
    // every COPY source exists in the repository, except the prebuilt stage's binary, which
    // the one building the image puts into the build context (deploy/container-smoke.sh)
    let mut stage = "";
    for line in docker.lines() {
        if line.starts_with("FROM ") {
            stage = line.split_whitespace().last().unwrap_or_default();
        }
        if !line.starts_with("COPY ") || line.contains("--from=") {
            continue;
        }
        if stage == "prebuilt" {
            assert_eq!(line, "COPY prebuilt/authgate /src/target/release/authgate");
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
        }
    }
    // the config it runs is the one it installs, and the lines its sed edits exist
    assert!(docker.contains(r#"CMD ["--config", "/etc/authgate/authgate.toml"]"#));
    let config = std::fs::read_to_string(format!("{ROOT}/config/authgate.toml")).unwrap();
    assert!(config.lines().any(|l| l.starts_with("# learned_orgs_file = ")));
    assert!(config
        .lines()
        .any(|l| l.starts_with(r#"admin_listen = "127.0.0.1:9090""#)));
    for needle in [
        "USER authgate",
        "EXPOSE 8080",
        "HEALTHCHECK",
        "VOLUME [\"/var/lib/authgate\"]",
        "authgate\", \"health\"",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks {needle}");
    }
}

/// The shipped `config/` in a temp dir, its five addresses (proxy, admin, the three demo
/// backends) moved to `ports`.
fn demo_config(ports: &[u16]) -> TempDir {
    let dir = TempDir::new("demo");
    let text = std::fs::read_to_string(format!("{ROOT}/config/authgate.toml"))
        .unwrap()
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{}", ports[0]))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", ports[1]))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{}", ports[2]))
        .replace("127.0.0.1:3001", &format!("127.0.0.1:{}", ports[3]))
        .replace("127.0.0.1:3002", &format!("127.0.0.1:{}", ports[4]));
    dir.write("authgate.toml", text.as_bytes());
    dir.write(
        "partners.toml",
        &std::fs::read(format!("{ROOT}/config/partners.toml")).unwrap(),
    );
    for spec in ["partner-api.yaml", "org-api.yaml"] {
        let bytes = std::fs::read(format!("{ROOT}/config/openapi/{spec}")).unwrap();
        dir.write(&format!("openapi/{spec}"), &bytes);
    }
    dir
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies `config/` into a temp dir with free ports, runs `authgate demo` on it, and
/// replays its walkthrough: 201, 401 revoked, 401 inactive, 403 IP, 429 login links.
#[test]
fn demo_walkthrough() {
    let ports = free_ports(5);
    let dir = demo_config(&ports);
    let mut child = Command::new(BIN)
        .args(["demo", "--config"])
        .arg(dir.path.join("authgate.toml"))
        .env_remove("AUTHGATE_DEV_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut tokens = std::collections::HashMap::new();
    while tokens.len() < 6 {
        let line = rx.recv_timeout(DEADLINE).expect("demo printed its tokens");
        if let Some((name, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            tokens.insert(name.to_string(), value.to_string());
        }
    }
    let addr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    wait_for(DEADLINE, "the demo gateway", || {
        common::try_request(addr, "GET", b"/health", &[], None)
            .ok()
            .filter(|r| r.status == 200)
    });
    // a request with the token the demo exported as `name`, then the `extra` headers
    let as_token = |name: &str, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&[u8]>| {
        let auth = format!("Bearer {}", tokens[name]);
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        request(addr, method, path, &headers, body)
    };
    let json = [("Content-Type", "application/json")];
    let created = as_token(
        "ACME",
        "POST",
        "/partner/v1/orgs",
        &json,
        Some(br#"{"name":"Acme Tours","external_id":"customer-12345"}"#),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let org = created.json()["id"].as_str().unwrap().to_string();
    let listed = as_token("ACME_ED", "GET", "/partner/v1/orgs", &[], None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["total"], 1);
    let own = as_token(
        "ACME",
        "POST",
        &format!("/partner/v1/orgs/{org}/api-keys"),
        &json,
        Some(b"{}"),
    );
    assert_eq!(own.status, 201, "{}", own.text());
    let org_key = own.json()["api_key"].as_str().unwrap().to_string();
    let info = request(
        addr,
        "GET",
        b"/org",
        &[("Authorization", &format!("Bearer {org_key}"))],
        None,
    );
    assert_eq!(
        info.status,
        200,
        "the org key the demo API minted works on /org: {}",
        info.text()
    );
    for (name, status) in [("LEAKED", 401), ("GLOBEX", 401)] {
        assert_eq!(
            as_token(name, "GET", "/partner/v1/orgs", &[], None).status,
            status,
            "{name}"
        );
    }
    let denied_ip = as_token(
        "INITECH",
        "GET",
        "/partner/v1/orgs",
        &[("X-Forwarded-For", "192.0.2.10")],
        None,
    );
    assert_eq!(denied_ip.status, 403);
    let foreign = as_token(
        "ACME",
        "POST",
        "/partner/v1/orgs/00000000-0000-0000-0000-000000000000/api-keys",
        &json,
        Some(b"{}"),
    );
    assert_eq!(foreign.status, 403);
    // the demo's edge-400 line: the shipped spec says a create-org body needs a name
    let edge = as_token(
        "ACME",
        "POST",
        "/partner/v1/orgs",
        &json,
        Some(br#"{"external_id":"no-name"}"#),
    );
    assert_eq!(edge.status, 400, "{}", edge.text());
    assert_eq!(edge.json()["message"], "Invalid request body: /name is required");
    assert!(edge.header("x-demo-instance").is_none(), "answered by the edge");
    let not_allowed = request(addr, "DELETE", b"/partner/v1/orgs", &[], None);
    assert_eq!(not_allowed.status, 405);
    let path = "/partner/v1/orgs/a1b2c3d4-e5f6-7890-abcd-ef1234567890/login-links";
    let statuses: Vec<u16> = (0..31)
        .map(|_| as_token("ACME", "POST", path, &json, Some(br#"{"email":"owner@acmetours.com"}"#)).status)
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 30, "{statuses:?}");
    assert_eq!(statuses[30], 429, "{statuses:?}");
    // two demo instances behind the partner-api cluster, in turn; the org API is another
    let instances: Vec<String> = (0..4)
        .map(|_| {
            let r = as_token("ACME", "GET", "/partner/v1/orgs", &[], None);
            assert_eq!(r.status, 200, "{r}");
            r.header("x-demo-instance").unwrap().to_string()
        })
        .collect();
    assert!(
        instances.windows(2).all(|w| w[0] != w[1]),
        "round robin over the partner-api instances: {instances:?}"
    );
    assert!(instances.iter().all(|i| i.starts_with("partner-api-")), "{instances:?}");
    assert_eq!(info.header("x-demo-instance"), Some("org-api-1"));
    let key = request(
        addr,
        "GET",
        b"/v1/org/info",
        &[("X-API-Key", "org_demo_0123456789abcdef0123")],
        None,
    );
    assert_eq!(key.status, 200, "{}", key.text());
    assert_eq!(key.json()["success"], true);
    drop(child);
}

/// Starts `authgate <args>` on the demo config with `secret` as the dev secret (none: unset),
/// output discarded.
fn spawn_with_secret(args: &[&str], config: &Path, secret: Option<&str>) -> Kill {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match secret {
        Some(s) => cmd.env("AUTHGATE_DEV_SECRET", s),
        None => cmd.env_remove("AUTHGATE_DEV_SECRET"),
    };
    Kill(cmd.spawn().unwrap())
}

/// Fault model: the gateway and the demo upstream run as two processes, as
/// deploy/container-smoke.sh runs the image's gateway beside `authgate demo --upstream-only`;
/// an upstream that listens elsewhere than the config's backends, or signs the org keys it
/// hands out with another secret than the gateway's, leaves that smoke test nothing real to
/// reach. Must hold: without AUTHGATE_DEV_SECRET it exits 1 naming the variable; with it, a
/// gateway started apart creates and lists an org through the demo instances (each answer
/// names its instance), and an org key the upstream minted passes that gateway on /org.
#[test]
fn demo_upstream_only_serves_a_gateway_started_apart() {
    let ports = free_ports(5);
    let dir = demo_config(&ports);
    let config = dir.path.join("authgate.toml");
    let mut refused = spawn_with_secret(&["demo", "--upstream-only"], &config, None);
    let status = wait_for(DEADLINE, "demo --upstream-only without a secret to exit", || {
        refused.0.try_wait().unwrap()
    });
    let mut said = String::new();
    std::io::Read::read_to_string(&mut refused.0.stderr.take().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("AUTHGATE_DEV_SECRET"), "{said}");

    let secret = "a-dev-secret-shared-by-both-processes";
    let _upstream = spawn_with_secret(&["demo", "--upstream-only"], &config, Some(secret));
    let _gateway = spawn_with_secret(&[], &config, Some(secret));
    let token = Command::new(BIN)
        .args([
            "token",
            "--partner",
            "acme",
            "--key-id",
            "key-acme-1",
            "--kid",
            "dev-hs",
            "--config",
        ])
        .arg(&config)
        .env("AUTHGATE_DEV_SECRET", secret)
        .output()
        .unwrap();
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let auth = format!("Bearer {}", String::from_utf8_lossy(&token.stdout).trim());
    let addr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let json = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let created = wait_for(DEADLINE, "the gateway and the demo upstream", || {
        common::try_request(
            addr,
            "POST",
            b"/partner/v1/orgs",
            &json,
            Some(br#"{"name":"Apart Tours","external_id":"apart-1"}"#),
        )
        .ok()
        .filter(|r| r.status == 201)
    });
    assert!(created
        .header("x-demo-instance")
        .is_some_and(|i| i.starts_with("partner-api-")));
    let listed = request(addr, "GET", b"/partner/v1/orgs", &json[..1], None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["total"], 1);
    let org = created.json()["id"].as_str().unwrap().to_string();
    let minted = request(
        addr,
        "POST",
        format!("/partner/v1/orgs/{org}/api-keys").as_bytes(),
        &json,
        Some(b"{}"),
    );
    assert_eq!(minted.status, 201, "{}", minted.text());
    let org_key = format!("Bearer {}", minted.json()["api_key"].as_str().unwrap());
    let info = request(addr, "GET", b"/org", &[("Authorization", org_key.as_str())], None);
    assert_eq!(
        info.status,
        200,
        "the org key the upstream minted passes the gateway: {}",
        info.text()
    );
}
