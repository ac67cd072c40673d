//! Reading files: the gateway config, the key files it names, the JWKS file and the
//! policy file. Used at start, by `authgate check`, and on every SIGHUP reload.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::demo_keys::is_burned_pem;
use super::jwks;
pub use super::policy_file::parse_directory;
use super::problem::{Problem, Problems};
use super::settings::{KeyMaterial, KeySource, Settings};
pub use super::validate::settings_from_text;
use crate::policy::directory::Directory;
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
    for k in &settings.keys {
        let at = |message: String| Problem {
            file: settings.config_path.clone(),
            line: Some(k.line),
            message,
        };
        let key = configured_key(k).and_then(|key| VerifyKey::new(k.kid.clone(), vec![k.algorithm], &key));
        match key {
            Ok(key) => keys.push(Arc::new(key)),
            Err(message) => problems.push(at(message)),
        }
    }
    if let Some(path) = settings.jwks.as_ref().and_then(|j| j.file.as_ref()) {
        let at = |message: String| Problem {
            file: path.clone(),
            line: None,
            message,
        };
        match jwks_file_keys(settings, path) {
            Ok((found, pinned)) => {
                keys.extend(found);
                problems.extend(pinned.into_iter().map(at));
            }
            Err(message) => problems.push(at(message)),
        }
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(Problems(problems))
    }
}

/// The verification key of one `[[jwt.keys]]` entry, read from where it says; `Err` says
/// what is wrong with it.
fn configured_key(k: &KeySource) -> Result<DecodingKey, String> {
    let kid = &k.kid;
    match &k.material {
        KeyMaterial::SecretEnv(var) => match std::env::var_os(var) {
            Some(v) if !v.is_empty() => Ok(DecodingKey::from_secret(v.as_encoded_bytes())),
            _ => Err(format!("key {kid:?}: environment variable {var} is not set")),
        },
        KeyMaterial::SecretFile(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("key {kid:?}: cannot read secret_file {}: {e}", path.display()))?;
            let secret = strip_one_newline(&bytes);
            if secret.is_empty() {
                Err(format!("key {kid:?}: secret file {} is empty", path.display()))
            } else {
                Ok(DecodingKey::from_secret(secret))
            }
        }
        KeyMaterial::PublicKeyFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("key {kid:?}: cannot read public_key_file {}: {e}", path.display()))?;
            if is_burned_pem(&pem) {
                return Err(format!(
                    "key {kid:?}: {} is the old demo key whose private half is public (git history); \
                     it is refused: generate your own key pair",
                    path.display()
                ));
            }
            public_key(k.algorithm, &pem).map_err(|e| {
                let alg = k.algorithm;
                format!(
                    "key {kid:?}: {} is not a usable {alg:?} public key: {e}",
                    path.display()
                )
            })
        }
    }
}

/// The keys of the JWKS `file` and, apart, a problem for each of its kids that a
/// `[[jwt.keys]]` entry pins (those keys are not taken). `Err`: the file cannot be read or
/// is not a JWKS.
fn jwks_file_keys(settings: &Settings, path: &Path) -> Result<(Vec<Arc<VerifyKey>>, Vec<String>), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read JWKS file: {e}"))?;
    let (found, skipped) = jwks::parse(&text, &settings.fixed.jwt.algorithms)?;
    for s in skipped {
        tracing::warn!(file = %path.display(), "JWKS: {s}");
    }
    let configured: HashSet<&str> = settings.keys.iter().map(|k| k.kid.as_str()).collect();
    let (pinned, keys): (Vec<_>, Vec<_>) = found.into_iter().partition(|k| configured.contains(k.kid.as_str()));
    let pinned = pinned
        .iter()
        .map(|k| format!("kid {:?} is also a [[jwt.keys]] entry", k.kid))
        .collect();
    Ok((keys, pinned))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_newline() {
        assert_eq!(strip_one_newline(b"abc\n"), b"abc");
        assert_eq!(strip_one_newline(b"abc\r\n"), b"abc");
        assert_eq!(strip_one_newline(b"abc\n\n"), b"abc\n");
        assert_eq!(strip_one_newline(b"abc"), b"abc");
        assert_eq!(strip_one_newline(b"abc\r"), b"abc\r");
    }
}
