//! Reading files: the gateway config, the key files it names, the JWKS file and the
//! policy file. Used at start, by `authgate check`, and on every SIGHUP reload.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::demo_keys::is_burned_pem;
use super::file::PolicyFile;
use super::jwks;
use super::problem::{Problem, Problems, Reporter};
use super::settings::{KeyMaterial, Settings};
use super::validate::ip_list;
pub use super::validate::settings_from_text;
use crate::policy::directory::{ApiKeyEntry, Directory, LimitOverride, OrgPolicy, PartnerPolicy};
use crate::policy::identity::id_problem;
use crate::policy::jwt::VerifyKey;

/// What a reload re-reads: the policy file, the key files and the TLS files.
pub struct PolicyFiles {
    pub(crate) directory: Directory,
    /// `[[jwt.keys]]` plus the JWKS `file`, in that order.
    pub(crate) keys: Vec<Arc<VerifyKey>>,
    /// `[server.tls]` files, parsed and checked (absent without `[server.tls]`).
    #[cfg(feature = "gateway")]
    pub(crate) tls: Option<super::tls_files::TlsMaterial>,
}

/// Everything needed to start: settings plus the first policy.
pub struct Loaded {
    pub settings: Settings,
    pub(crate) policy: PolicyFiles,
}

impl Loaded {
    /// Things worth an operator's attention that do not stop the gateway (`check` prints
    /// them on stderr): a TLS certificate that expires within 14 days, or has expired.
    pub fn warnings(&self) -> Vec<String> {
        #[cfg(feature = "gateway")]
        if let Some(tls) = &self.policy.tls {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            return tls.expiry_warning(now).into_iter().collect();
        }
        Vec::new()
    }
}

fn read_text(path: &Path, what: &str) -> Result<String, Problems> {
    std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read {what}: {e}"),
        }])
    })
}

/// Loads and validates the gateway config and everything it names. Reports every problem.
pub fn load(config_path: &Path) -> Result<Loaded, Problems> {
    let text = read_text(config_path, "config file")?;
    let (settings, mut problems) = settings_from_text(config_path, &text);
    let Some(mut settings) = settings else {
        return Err(problems);
    };
    problems.extend(resolve_backends(&mut settings));
    match load_policy_files(&settings) {
        Ok(policy) if problems.is_empty() => Ok(Loaded { settings, policy }),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Resolves every backend's `host:port` (every backend resolves: docs/reference.md#upstream-clusters), once, at
/// load: `check` reports a name that does not resolve, and a running gateway connects to
/// the addresses found here until it restarts. Two entries of one cluster that resolve to
/// the same address are a problem too (one backend counted twice).
pub(crate) fn resolve_backends(settings: &mut Settings) -> Problems {
    use std::net::ToSocketAddrs;
    let mut problems = Vec::new();
    let file = settings.config_path.clone();
    for cluster in &mut settings.upstreams {
        let mut seen: Vec<(std::net::SocketAddr, String)> = Vec::new();
        for b in &mut cluster.backends {
            if b.addr.is_none() {
                match b.address.to_socket_addrs().map(|mut a| a.next()) {
                    Ok(Some(addr)) => b.addr = Some(addr),
                    Ok(None) => problems.push(Problem {
                        file: file.clone(),
                        line: Some(b.line),
                        message: format!(
                            "upstreams.{}: backend {:?} resolves to no address",
                            cluster.name, b.address
                        ),
                    }),
                    Err(e) => problems.push(Problem {
                        file: file.clone(),
                        line: Some(b.line),
                        message: format!(
                            "upstreams.{}: backend {:?} does not resolve: {e}",
                            cluster.name, b.address
                        ),
                    }),
                }
            }
            if let Some(addr) = b.addr {
                if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
                    problems.push(Problem {
                        file: file.clone(),
                        line: Some(b.line),
                        message: format!(
                            "upstreams.{}: backend {:?} is {addr}, like {first:?}",
                            cluster.name, b.address
                        ),
                    });
                } else {
                    seen.push((addr, b.address.clone()));
                }
            }
        }
    }
    Problems(problems)
}

/// Reads the key files and the policy file the settings name (start and reload).
pub fn load_policy_files(settings: &Settings) -> Result<PolicyFiles, Problems> {
    let mut problems = Problems::default();
    let keys = match load_keys(settings) {
        Ok(k) => k,
        Err(p) => {
            problems.extend(p);
            vec![]
        }
    };
    let directory = match load_directory(settings) {
        Ok(d) => Some(d),
        Err(p) => {
            problems.extend(p);
            None
        }
    };
    #[cfg(feature = "gateway")]
    let tls = match settings
        .tls
        .as_ref()
        .map(|t| super::tls_files::load(t, &settings.config_path))
    {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(p)) => {
            problems.extend(p);
            None
        }
    };
    match directory {
        Some(directory) if problems.is_empty() => Ok(PolicyFiles {
            directory,
            keys,
            #[cfg(feature = "gateway")]
            tls,
        }),
        _ => Err(problems),
    }
}

/// Loads the configured keys and the JWKS file.
pub(crate) fn load_keys(settings: &Settings) -> Result<Vec<Arc<VerifyKey>>, Problems> {
    let mut problems = Vec::new();
    let mut keys = Vec::new();
    let cfg = &settings.config_path;
    for k in &settings.keys {
        let at = |message: String| Problem {
            file: cfg.clone(),
            line: Some(k.line),
            message,
        };
        let key = match &k.material {
            KeyMaterial::SecretEnv(var) => match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Ok(DecodingKey::from_secret(v.as_encoded_bytes())),
                _ => Err(at(format!("key {:?}: environment variable {var} is not set", k.kid))),
            },
            KeyMaterial::SecretFile(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    let secret = strip_one_newline(&bytes);
                    if secret.is_empty() {
                        Err(at(format!("key {:?}: secret file {} is empty", k.kid, path.display())))
                    } else {
                        Ok(DecodingKey::from_secret(secret))
                    }
                }
                Err(e) => Err(at(format!(
                    "key {:?}: cannot read secret_file {}: {e}",
                    k.kid,
                    path.display()
                ))),
            },
            KeyMaterial::PublicKeyFile(path) => match std::fs::read(path) {
                Ok(pem) if is_burned_pem(&pem) => Err(at(format!(
                    "key {:?}: {} is the old demo key whose private half is public (git history); \
                     it is refused: generate your own key pair",
                    k.kid,
                    path.display()
                ))),
                Ok(pem) => public_key(k.algorithm, &pem).map_err(|e| {
                    at(format!(
                        "key {:?}: {} is not a usable {:?} public key: {e}",
                        k.kid,
                        path.display(),
                        k.algorithm
                    ))
                }),
                Err(e) => Err(at(format!(
                    "key {:?}: cannot read public_key_file {}: {e}",
                    k.kid,
                    path.display()
                ))),
            },
        };
        match key.and_then(|key| VerifyKey::new(k.kid.clone(), vec![k.algorithm], &key).map_err(at)) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(p) => problems.push(p),
        }
    }
    if let Some(path) = settings.jwks.as_ref().and_then(|j| j.file.as_ref()) {
        match std::fs::read(path) {
            Ok(text) => match jwks::parse(&text, &settings.fixed.jwt.algorithms) {
                Ok((found, skipped)) => {
                    for s in skipped {
                        tracing::warn!(file = %path.display(), "JWKS: {s}");
                    }
                    let configured: HashSet<&str> = settings.keys.iter().map(|k| k.kid.as_str()).collect();
                    for k in found {
                        if configured.contains(k.kid.as_str()) {
                            problems.push(Problem {
                                file: path.clone(),
                                line: None,
                                message: format!("kid {:?} is also a [[jwt.keys]] entry", k.kid),
                            });
                        } else {
                            keys.push(k);
                        }
                    }
                }
                Err(e) => problems.push(Problem {
                    file: path.clone(),
                    line: None,
                    message: e,
                }),
            },
            Err(e) => problems.push(Problem {
                file: path.clone(),
                line: None,
                message: format!("cannot read JWKS file: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(Problems(problems))
    }
}

fn public_key(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    use jsonwebtoken::AlgorithmFamily;
    match alg.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => Ok(DecodingKey::from_secret(pem)),
    }
}

/// Secret files end with at most one newline that is not part of the secret.
pub fn strip_one_newline(bytes: &[u8]) -> &[u8] {
    let b = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.len() != b.len() {
        b.strip_suffix(b"\r").unwrap_or(b)
    } else {
        b
    }
}

/// Reads and validates the policy file.
pub(crate) fn load_directory(settings: &Settings) -> Result<Directory, Problems> {
    let path = &settings.policy_file;
    let text = read_text(path, "policy file")?;
    parse_directory(path, &text, settings)
}

/// Validates policy-file text (separate from reading it, for tests).
pub fn parse_directory(path: &Path, text: &str, settings: &Settings) -> Result<Directory, Problems> {
    let mut r = Reporter::new(path, text);
    let file: PolicyFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            r.parse_error(&e);
            return Err(r.finish());
        }
    };
    let mut partners = Vec::new();
    let mut seen = HashSet::new();
    for p in &file.partner {
        let span = p.span();
        let p = p.get_ref();
        let id = p.id.get_ref();
        if id.is_empty() {
            r.at(p.id.span(), "partner: id must not be empty");
        } else if let Some(why) = id_problem(id) {
            r.at(p.id.span(), format!("partner {id:?}: the id {why}"));
        } else if !seen.insert(id.clone()) {
            r.at(p.id.span(), format!("partner {id:?} is listed twice"));
        }
        let mut overrides = Vec::new();
        if let Some(limits) = &p.limits {
            for (name, value) in limits.get_ref() {
                let Some(limit) = settings.limits.iter().position(|l| &*l.name == name) else {
                    r.at(
                        limits.span(),
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
        }
        let ip_allow_list = p
            .ip_allow_list
            .as_ref()
            .map(|l| ip_list(&mut r, l, &format!("partner {id:?} ip_allow_list")));
        let _ = span;
        partners.push(PartnerPolicy {
            id: Arc::from(id.as_str()),
            active: p.active,
            ip_allow_list: ip_allow_list.filter(|s| !s.is_empty()),
            revoked_keys: p.revoked_keys.iter().map(|k| k.as_str().into()).collect(),
            orgs: p.orgs.iter().map(|o| o.as_str().into()).collect(),
            limit_overrides: overrides,
        });
    }
    let mut orgs = Vec::new();
    let mut seen = HashSet::new();
    for o in &file.org {
        let o = o.get_ref();
        let id = o.id.get_ref();
        if id.is_empty() {
            r.at(o.id.span(), "org: id must not be empty");
        } else if let Some(why) = id_problem(id) {
            r.at(o.id.span(), format!("org {id:?}: the id {why}"));
        } else if !seen.insert(id.clone()) {
            r.at(o.id.span(), format!("org {id:?} is listed twice"));
        }
        let ip_allow_list = o
            .ip_allow_list
            .as_ref()
            .map(|l| ip_list(&mut r, l, &format!("org {id:?} ip_allow_list")));
        orgs.push(OrgPolicy {
            id: Arc::from(id.as_str()),
            active: o.active,
            ip_allow_list: ip_allow_list.filter(|s| !s.is_empty()),
            revoked_keys: o.revoked_keys.iter().map(|k| k.as_str().into()).collect(),
        });
    }
    let mut api_keys: Vec<ApiKeyEntry> = Vec::new();
    let mut seen = HashSet::new();
    for k in &file.api_key {
        let k = k.get_ref();
        let id = k.id.get_ref();
        if id.is_empty() {
            r.at(k.id.span(), "api_key: id must not be empty");
        } else if let Some(why) = id_problem(id) {
            r.at(k.id.span(), format!("api_key {id:?}: the id {why}"));
        } else if !seen.insert(id.clone()) {
            r.at(k.id.span(), format!("api_key {id:?} is listed twice"));
        }
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
    if r.has_problems() {
        return Err(r.finish());
    }
    Ok(Directory::new(partners, orgs, api_keys))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn secret_newline() {
        assert_eq!(strip_one_newline(b"abc\n"), b"abc");
        assert_eq!(strip_one_newline(b"abc\r\n"), b"abc");
        assert_eq!(strip_one_newline(b"abc\n\n"), b"abc\n");
        assert_eq!(strip_one_newline(b"abc"), b"abc");
        assert_eq!(strip_one_newline(b"abc\r"), b"abc\r");
    }
}
