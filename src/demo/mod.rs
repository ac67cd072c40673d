//! `authgate demo`: the gateway on the shipped `config/` files plus the in-memory Partner
//! API of [`upstream`], with ready-to-paste curl lines, so a newcomer sees 200, 401, 403
//! and 429 in a minute.

pub(crate) mod upstream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::config::{Loaded, Settings};
use crate::mint::{mint, MintOptions, Subject};

/// The env var the shipped config reads the dev HMAC secret from.
pub(crate) const DEV_SECRET_ENV: &str = "AUTHGATE_DEV_SECRET";
/// The demo's static org key (its digest is in `config/partners.toml`).
pub(crate) const DEMO_API_KEY: &str = "org_demo_0123456789abcdef0123";

fn find_config(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if explicit.is_some() {
        return explicit;
    }
    let mut candidates = vec![PathBuf::from("config/authgate.toml")];
    if let Ok(exe) = std::env::current_exe() {
        // target/release/authgate -> repo root
        for up in exe.ancestors().skip(1).take(3) {
            candidates.push(up.join("config/authgate.toml"));
        }
    }
    candidates.push(PathBuf::from("/etc/authgate/authgate.toml"));
    candidates.into_iter().find(|p| p.is_file())
}

/// Runs the demo until Ctrl-C.
pub fn run(config: Option<PathBuf>) -> ExitCode {
    let Some(config) = find_config(config) else {
        eprintln!("authgate demo: cannot find config/authgate.toml (run it from the repository root or pass --config)");
        return ExitCode::from(1);
    };
    if std::env::var_os(DEV_SECRET_ENV).is_none() {
        let secret: [u8; 32] = rand::thread_rng().gen();
        // Set before any thread starts: the gateway and `mint` read it from the environment.
        std::env::set_var(DEV_SECRET_ENV, hex::encode(secret));
    }
    let mut loaded = match crate::config::load(&config) {
        Ok(l) => l,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = add_demo_ed_key(&mut loaded) {
        eprintln!("authgate demo: cannot create the demo Ed25519 key: {e}");
        return ExitCode::from(1);
    }
    crate::logging::init("warn", crate::config::LogFormat::Text);
    let instances = demo_instances(&loaded.settings);
    // the upstream thread serves until the process exits with the gateway
    if let Err(e) = start_upstream(&loaded, &instances) {
        eprintln!("authgate demo: cannot start the demo upstream: {e}");
        return ExitCode::from(1);
    }
    print_walkthrough(&config, &loaded.settings, &instances);
    match crate::server::run(loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs only the demo upstream, on every backend address the config's clusters name, until
/// the process is stopped: for a gateway started as a process of its own (the container smoke
/// test runs the image's gateway beside it). The secret of the config's `dev-hs` key must be
/// the gateway's (`AUTHGATE_DEV_SECRET`): the org API keys it hands out are signed with it.
pub fn run_upstream(config: Option<PathBuf>) -> ExitCode {
    let Some(config) = find_config(config) else {
        eprintln!("authgate demo: cannot find config/authgate.toml (run it from the repository root or pass --config)");
        return ExitCode::from(1);
    };
    let loaded = match crate::config::load(&config) {
        Ok(l) => l,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(1);
        }
    };
    crate::logging::init("warn", crate::config::LogFormat::Text);
    let instances = demo_instances(&loaded.settings);
    let server = match start_upstream(&loaded, &instances) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("authgate demo: cannot start the demo upstream: {e}");
            return ExitCode::from(1);
        }
    };
    let names: Vec<String> = instances.iter().map(|i| format!("{}@{}", i.name, i.addr)).collect();
    println!("authgate demo upstream: {}", names.join(" "));
    // the thread serves until every listener fails; it never returns on its own otherwise
    match server.join() {
        Ok(()) => ExitCode::from(1),
        Err(_) => {
            eprintln!("authgate demo: the demo upstream thread panicked");
            ExitCode::from(1)
        }
    }
}

/// Kid of the Ed25519 pair the demo generates at start.
pub(crate) const DEMO_ED_KID: &str = "demo-ed";

/// Generates a fresh Ed25519 pair for this demo run (never a committed one: a private key
/// in the repository would let anyone mint tokens), writes it to a private temp directory
/// so `authgate token`-style minting and SIGHUP reloads can read it, and trusts it.
fn add_demo_ed_key(loaded: &mut Loaded) -> anyhow::Result<()> {
    use crate::config::{KeyMaterial, KeySource};
    if !loaded
        .settings
        .fixed
        .jwt
        .algorithms
        .contains(&jsonwebtoken::Algorithm::EdDSA)
        || loaded.settings.keys.iter().any(|k| k.kid == DEMO_ED_KID)
    {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("authgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (private_pem, public_pem) = crate::config::demo_keys::generate_ed25519_pem()?;
    let private = dir.join("demo-ed.key.pem");
    let public = dir.join("demo-ed.pub.pem");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&private)?;
        f.write_all(private_pem.as_bytes())?;
    }
    std::fs::write(&public, public_pem.as_bytes())?;
    loaded.settings.keys.push(KeySource {
        kid: DEMO_ED_KID.into(),
        algorithm: jsonwebtoken::Algorithm::EdDSA,
        material: KeyMaterial::PublicKeyFile(public),
        private_key_file: Some(private),
        line: 0,
    });
    loaded.policy = crate::config::load_policy_files(&loaded.settings).map_err(|p| anyhow::anyhow!("{p}"))?;
    Ok(())
}

/// One demo upstream instance: a backend of a configured cluster.
struct Instance {
    /// `<cluster>-<n>`, sent back in the `X-Demo-Instance` header.
    name: String,
    addr: std::net::SocketAddr,
}

/// An instance for every distinct backend address of every cluster (the shipped config:
/// two behind `partner-api`, one behind `org-api`).
fn demo_instances(s: &Settings) -> Vec<Instance> {
    let mut out: Vec<Instance> = Vec::new();
    for c in &s.upstreams {
        for (i, b) in c.backends.iter().enumerate() {
            match b.addr {
                Some(addr) if !out.iter().any(|x| x.addr == addr) => out.push(Instance {
                    name: format!("{}-{}", c.name, i + 1),
                    addr,
                }),
                _ => {}
            }
        }
    }
    out
}

/// Binds every instance (failing fast on a taken port) and serves them all from one
/// thread, over one in-memory store: an org created through one instance is known to all.
fn start_upstream(loaded: &Loaded, instances: &[Instance]) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut listeners = Vec::new();
    for i in instances {
        let listener =
            std::net::TcpListener::bind(i.addr).map_err(|e| anyhow::anyhow!("{} on {}: {e}", i.name, i.addr))?;
        listener.set_nonblocking(true)?;
        listeners.push((listener, Arc::<str>::from(i.name.as_str())));
    }
    let settings = loaded.settings.clone();
    let minter: upstream::OrgKeyMinter = Arc::new(move |org: &str, key_id: &str| {
        let opts = MintOptions {
            key_id: Some(key_id.to_string()),
            kid: Some("dev-hs".into()),
            ttl: None,
        };
        mint(&settings, &Subject::Org(org.to_string()), &opts).unwrap_or_else(|e| format!("mint-failed: {e}"))
    });
    let server = std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("demo upstream: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let api = upstream::DemoApi::new(Some(minter));
                let mut tasks = Vec::new();
                for (listener, name) in listeners {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => tasks.push(tokio::spawn(upstream::serve(l, api.clone(), name))),
                        Err(e) => eprintln!("demo upstream {name}: {e}"),
                    }
                }
                for t in tasks {
                    match t.await {
                        Ok(Err(e)) => eprintln!("demo upstream stopped: {e}"),
                        Err(e) => eprintln!("demo upstream stopped: {e}"),
                        Ok(Ok(())) => {}
                    }
                }
            });
        })?;
    Ok(server)
}

fn token(settings: &Settings, subject: Subject, jti: &str, kid: &str) -> String {
    let opts = MintOptions {
        key_id: Some(jti.into()),
        kid: Some(kid.into()),
        ttl: Some(Duration::from_secs(24 * 3600)),
    };
    mint(settings, &subject, &opts).unwrap_or_else(|e| format!("<cannot mint: {e}>"))
}

fn print_walkthrough(config: &Path, s: &Settings, instances: &[Instance]) {
    let port = s.listen.port();
    let base = format!("http://127.0.0.1:{port}");
    let admin = format!("http://{}", s.admin_listen);
    let acme = token(s, Subject::Partner("acme".into()), "key-acme-1", "dev-hs");
    let acme_ed = token(s, Subject::Partner("acme".into()), "key-acme-ed", DEMO_ED_KID);
    let leaked = token(s, Subject::Partner("acme".into()), "key-2025-leaked", "dev-hs");
    let globex = token(s, Subject::Partner("globex".into()), "key-globex-1", "dev-hs");
    let initech = token(s, Subject::Partner("initech".into()), "key-initech-1", "dev-hs");
    let org = token(
        s,
        Subject::Org("cf2701f8-fc4d-4002-8d52-92dd0d1e82a7".into()),
        "org-key-1",
        "dev-hs",
    );
    println!(
        r#"
authgate demo — gateway on {base} (admin {admin}), demo upstream instances {upstream}
config: {config}

Paste these into another shell (tokens are valid for 24 h):

export ACME={acme}
export ACME_ED={acme_ed}
export LEAKED={leaked}
export GLOBEX={globex}
export INITECH={initech}
export ORGKEY={org}"#,
        upstream = instances
            .iter()
            .map(|i| format!("{}@{}", i.name, i.addr))
            .collect::<Vec<_>>()
            .join(" "),
        config = config.display(),
    );
    print_curls(&base, &admin);
}

/// The walkthrough's curl lines, one per layer, for the tokens printed before them.
fn print_curls(base: &str, admin: &str) {
    let own_org = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
    println!(
        r#"
# 201: create an org (the gateway learns it belongs to acme); 200: list acme's orgs
curl -s -X POST {base}/partner/v1/orgs -H "Authorization: Bearer $ACME" -H 'Content-Type: application/json' -d '{{"name":"Acme Tours","external_id":"customer-12345"}}'
curl -s {base}/partner/v1/orgs -H "Authorization: Bearer $ACME_ED"
curl -s {base}/partner/v1/orgs/by-external-id/customer-12345 -H "Authorization: Bearer $ACME"

# 401: no token / revoked key / inactive partner
curl -si {base}/partner/v1/orgs
curl -si {base}/partner/v1/orgs -H "Authorization: Bearer $LEAKED"
curl -si {base}/partner/v1/orgs -H "Authorization: Bearer $GLOBEX"

# 403: client IP not in initech's allow list; then an allowed one
curl -si {base}/partner/v1/orgs -H "Authorization: Bearer $INITECH" -H 'X-Forwarded-For: 192.0.2.10'
curl -si {base}/partner/v1/orgs -H "Authorization: Bearer $INITECH" -H 'X-Forwarded-For: 203.0.113.9'

# 403: an org that is not acme's; 201: one that is
curl -si -X POST {base}/partner/v1/orgs/00000000-0000-0000-0000-000000000000/api-keys -H "Authorization: Bearer $ACME"
curl -s -X POST {base}/partner/v1/orgs/{own_org}/api-keys -H "Authorization: Bearer $ACME"

# 429: login links are limited to 30/min per partner
for i in $(seq 31); do curl -s -o /dev/null -w '%{{http_code}} ' -X POST {base}/partner/v1/orgs/{own_org}/login-links -H "Authorization: Bearer $ACME" -H 'Content-Type: application/json' -d '{{"email":"owner@acmetours.com"}}'; done; echo

# org-level APIs: an org API key (JWT) and an Appizer-style static key
curl -s {base}/org -H "Authorization: Bearer $ORGKEY"
curl -s {base}/v1/org/info -H 'X-API-Key: {key}'
curl -si {base}/v1/org/info -H 'X-API-Key: org_not_a_real_key_000000'

# round robin: the partner-api cluster has two demo instances; X-Demo-Instance names the one that answered
for i in 1 2 3 4; do curl -s -o /dev/null -D - {base}/partner/v1/orgs -H "Authorization: Bearer $ACME" | grep -i '^x-demo-instance'; done
curl -s {admin}/metrics | grep '^authgate_upstream_backend_healthy'

# 400 from the edge, never sent upstream: the spec's create-org body needs a name, and limit is 1-100;
# 415: a body that is not JSON; 405: a path the spec documents, with a method it does not
curl -si -X POST {base}/partner/v1/orgs -H "Authorization: Bearer $ACME" -H 'Content-Type: application/json' -d '{{"external_id":"no-name"}}'
curl -si '{base}/partner/v1/orgs?limit=5000' -H "Authorization: Bearer $ACME"
curl -si -X POST {base}/partner/v1/orgs -H "Authorization: Bearer $ACME" -H 'Content-Type: text/plain' -d 'Acme Tours'
curl -si -X DELETE {base}/partner/v1/orgs -H "Authorization: Bearer $ACME"

# 400: path hygiene; metrics
curl -si --path-as-is '{base}/partner/v1/orgs/{own_org}/../x' -H "Authorization: Bearer $ACME"
curl -s {admin}/metrics | grep '^authgate_'

Ctrl-C stops the demo.
"#,
        key = DEMO_API_KEY,
    );
}
