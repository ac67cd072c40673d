//! The `authgate` command line (docs/reference.md#commands).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

use authgate::mint::{MintOptions, Subject};
use authgate::policy::principal::Principal;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An authenticating reverse-proxy gateway for the OpenCX Partner API.
#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Reference (commands, config keys, pipeline, metrics): docs/reference.md in the authgate repository."
)]
struct Cli {
    /// Run the gateway with this config file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and policy files: print `ok`, or every problem as file:line: message.
    Check {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Print the compiled route table: [[routes]], then every [[openapi]] operation, with what is validated.
    Routes {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Run the gateway and the demo upstream on the shipped config/ files.
    Demo {
        /// Config to use (default: config/authgate.toml).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Run only the demo upstream, for a gateway started separately (e.g. in a container);
        /// AUTHGATE_DEV_SECRET must be the gateway's.
        #[arg(long)]
        upstream_only: bool,
    },
    /// Mint a partner (or org) token with a key the config names; prints the token.
    Token {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Partner id (the partner_claim).
        #[arg(long, conflicts_with = "org", required_unless_present = "org")]
        partner: Option<String>,
        /// Org id (the org_claim), for org-level API keys.
        #[arg(long)]
        org: Option<String>,
        /// API key id (the key_id_claim, what revocation names).
        #[arg(long = "key-id", value_name = "JTI")]
        key_id: Option<String>,
        /// Signing key id (default: the first key that can sign).
        #[arg(long)]
        kid: Option<String>,
        /// Lifetime, e.g. 1h (default: no exp).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Read an API key on stdin and print its SHA-256 digest for the policy file.
    HashKey,
    /// Revoke an API key on every replica through Redis ([redis] required).
    Revoke(RevokeArgs),
    /// Take back a revocation made with `authgate revoke`.
    Unrevoke(RevokeArgs),
    /// Orgs created before the gateway stood in front of the API.
    Orgs {
        #[command(subcommand)]
        action: OrgsAction,
    },
    /// Exit 0 when the admin listener answers GET /healthz with 200 (container HEALTHCHECK).
    Health {
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
    },
}

#[derive(clap::Args)]
struct RevokeArgs {
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// The key id (the key_id_claim, `jti` by default).
    #[arg(long = "key-id", value_name = "JTI")]
    key_id: String,
    /// The partner whose key it is.
    #[arg(long, conflicts_with = "org", required_unless_present = "org")]
    partner: Option<String>,
    /// The org whose key it is.
    #[arg(long)]
    org: Option<String>,
    /// How long to wait for every replica announced in the last 10 s to apply it (exit 3
    /// when some did not, or none announced itself).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    wait: String,
    /// Store it for a partner or org the policy file does not list (refused otherwise).
    #[arg(long)]
    allow_unknown: bool,
}

impl RevokeArgs {
    fn principal(&self) -> Principal {
        match (&self.partner, &self.org) {
            (Some(p), _) => Principal::partner(p.as_str()),
            (None, Some(o)) => Principal::org(o.as_str()),
            (None, None) => Principal::partner(""),
        }
    }
}

#[derive(Subcommand)]
enum OrgsAction {
    /// Record orgs (one id per line, from FILE or stdin) as learned orgs of a partner; prints how many were new.
    Import {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        #[arg(long)]
        partner: String,
        /// One org id per line; `-` or nothing reads stdin.
        file: Option<PathBuf>,
        /// Import for a partner the policy file does not list (refused otherwise).
        #[arg(long, alias = "allow-unknown")]
        allow_unknown_partner: bool,
    },
    /// Print a partner's learned orgs, one per line.
    List {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        #[arg(long)]
        partner: String,
    },
}

/// `authgate routes`: the compiled table, or the config's problems (exit 1).
fn routes(config: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read config file: {e}", config.display());
            return ExitCode::from(1);
        }
    };
    match authgate::config::load::settings_from_text(config, &text) {
        (Some(s), problems) if problems.is_empty() => {
            print!("{}", authgate::config::routes_report::render(&s));
            ExitCode::SUCCESS
        }
        (_, problems) => {
            eprintln!("{problems}");
            ExitCode::from(1)
        }
    }
}

/// `authgate revoke` / `unrevoke` with a parsed `--wait`.
fn revoke(a: &RevokeArgs, revoked: bool) -> ExitCode {
    match authgate::config::validate::parse_duration(&a.wait) {
        Ok(wait) => authgate::ops::revoke(&a.config, &a.principal(), &a.key_id, revoked, wait, a.allow_unknown),
        Err(e) => {
            eprintln!("--wait: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => check(&config),
        (Some(Command::Routes { config }), _) => routes(&config),
        (
            Some(Command::Demo {
                config,
                upstream_only: false,
            }),
            _,
        ) => authgate::demo::run(config),
        (
            Some(Command::Demo {
                config,
                upstream_only: true,
            }),
            _,
        ) => authgate::demo::run_upstream(config),
        (
            Some(Command::Token {
                config,
                partner,
                org,
                key_id,
                kid,
                ttl,
            }),
            _,
        ) => token(&config, partner, org, key_id, kid, ttl),
        (Some(Command::HashKey), _) => hash_key(),
        (Some(Command::Health { admin }), _) => health(admin),
        (Some(Command::Revoke(a)), _) => revoke(&a, true),
        (Some(Command::Unrevoke(a)), _) => revoke(&a, false),
        (
            Some(Command::Orgs {
                action:
                    OrgsAction::Import {
                        config,
                        partner,
                        file,
                        allow_unknown_partner,
                    },
            }),
            _,
        ) => authgate::ops::orgs_import(&config, &partner, file.as_deref(), allow_unknown_partner),
        (
            Some(Command::Orgs {
                action: OrgsAction::List { config, partner },
            }),
            _,
        ) => authgate::ops::orgs_list(&config, &partner),
        (None, Some(config)) => run(&config),
        (None, None) => {
            eprintln!("authgate: --config PATH is required (or a subcommand; see --help)");
            ExitCode::from(2)
        }
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    match authgate::config::load(config) {
        Ok(loaded) => {
            authgate::ops::warn_if_redis_unreachable(&loaded.settings);
            authgate::ops::warn_of_damaged_state_files(&loaded.settings);
            for w in loaded.warnings() {
                eprintln!("warning: {w}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{problems}");
            ExitCode::from(1)
        }
    }
}

fn run(config: &std::path::Path) -> ExitCode {
    let loaded = match authgate::config::load(config) {
        Ok(l) => l,
        Err(problems) => {
            eprintln!("{problems}");
            if problems.0.iter().any(|p| p.message.starts_with("key ")) {
                eprintln!(
                    "authgate: every [[jwt.keys]] entry needs its key: set the environment variable its \
                     secret_env names, or mount the secret_file / public_key_file it names (in the \
                     container: your config and keys over /etc/authgate). No key ships with authgate."
                );
            }
            eprintln!("authgate: refusing to start with an invalid config");
            return ExitCode::from(1);
        }
    };
    authgate::logging::init(&loaded.settings.log_level, loaded.settings.log_format);
    match authgate::server::run(loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            authgate::logging::flush();
            eprintln!("authgate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn token(
    config: &std::path::Path,
    partner: Option<String>,
    org: Option<String>,
    key_id: Option<String>,
    kid: Option<String>,
    ttl: Option<String>,
) -> ExitCode {
    let settings = match authgate::config::load(config) {
        Ok(l) => l.settings,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(1);
        }
    };
    let ttl = match ttl.as_deref().map(authgate::config::validate::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("--ttl: {e}");
            return ExitCode::from(2);
        }
    };
    let subject = match (partner, org) {
        (Some(p), _) => Subject::Partner(p),
        (None, Some(o)) => Subject::Org(o),
        (None, None) => {
            eprintln!("--partner or --org is required");
            return ExitCode::from(2);
        }
    };
    match authgate::mint::mint(&settings, &subject, &MintOptions { key_id, kid, ttl }) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate token: {e}");
            ExitCode::from(1)
        }
    }
}

fn hash_key() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("authgate hash-key: cannot read stdin: {e}");
        return ExitCode::from(1);
    }
    let key = authgate::config::load::strip_one_newline(&input);
    if key.is_empty() {
        eprintln!("authgate hash-key: no key on stdin");
        return ExitCode::from(1);
    }
    println!("{}", hex::encode(Sha256::digest(key)));
    ExitCode::SUCCESS
}

fn health(admin: std::net::SocketAddr) -> ExitCode {
    use std::io::Write;
    let timeout = std::time::Duration::from_secs(3);
    let probe = || -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect_timeout(&admin, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: authgate\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("authgate health: {e}");
            ExitCode::from(1)
        }
    }
}
