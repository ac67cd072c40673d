//! Reading the `[server.tls]` files (docs/reference.md#tls-and-cloudflare): certificate chain,
//! private key and client CA, parsed and checked into one [`TlsMaterial`], with the expiry
//! warning `check` prints. Config reads files into values; the listener that serves them
//! (resolver, client-CA verifier, session callback) is `crate::tls`, which imports this,
//! never the other way round.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::RootCertStore;

use super::settings::TlsFiles;
use super::{Problem, Problems};

/// `check` warns when the served certificate expires within this many seconds (14 days).
pub(crate) const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

/// One consistent set of TLS files, parsed and checked: what a handshake uses.
pub(crate) struct TlsMaterial {
    /// The chain (leaf first) with its signing key; the key is known to match the leaf.
    certified: Arc<CertifiedKey>,
    /// Verifies client certificates against `client_ca_file` (absent: no client auth).
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The leaf's notAfter, Unix seconds (`authgate_tls_cert_expiry_seconds`).
    pub(crate) not_after: i64,
    /// The leaf's serial number, hex (logged on reload).
    pub(crate) serial: String,
    /// The certificate file, for messages.
    cert_file: PathBuf,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("client_auth", &self.client_verifier.is_some())
            .finish()
    }
}

impl TlsMaterial {
    /// The chain and key a handshake presents (checked to match when loaded).
    pub(crate) fn certified(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The client-certificate verifier of `client_ca_file`; `None` without client auth.
    pub(crate) fn client_verifier(&self) -> Option<&Arc<dyn ClientCertVerifier>> {
        self.client_verifier.as_ref()
    }

    /// What `check`, the start and a reload say about the certificate's expiry (see
    /// [`expiry_warning`]).
    pub(crate) fn expiry_warning(&self, now: i64) -> Option<String> {
        expiry_warning(&self.cert_file, &self.serial, self.not_after, now)
    }
}

/// The crypto provider pingora installs (ring); ours is the same, built explicitly so loading
/// does not depend on pingora having started.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Problems found while reading the TLS files, each at the config line naming its file.
struct Found<'p> {
    config_path: &'p Path,
    problems: Vec<Problem>,
}

impl Found<'_> {
    /// The value, or `None` with the problem recorded at `line` as `{field}: {why}`.
    fn keep<T>(&mut self, line: usize, field: impl std::fmt::Display, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|why| {
                self.problems.push(Problem {
                    file: self.config_path.to_path_buf(),
                    line: Some(line),
                    message: format!("{field}: {why}"),
                })
            })
            .ok()
    }
}

/// Reads and checks the TLS files (start, `check`, every reload). Every problem is reported,
/// at the config line that names the file: unreadable files, no certificate, a certificate
/// that does not parse, no or an unsupported private key, a key that does not match the
/// leaf, a client CA file without a usable CA certificate.
pub(crate) fn load(files: &TlsFiles, config_path: &Path) -> Result<TlsMaterial, Problems> {
    let mut found = Found {
        config_path,
        problems: Vec::new(),
    };
    let provider = provider();
    let cert_field = format!("server.tls.cert_file {}", files.cert_file.display());
    let key_field = format!("server.tls.key_file {}", files.key_file.display());
    let chain = found.keep(files.cert_line, &cert_field, read_certs(&files.cert_file));
    let leaf = chain
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|leaf| leaf_facts(leaf).ok());
    let key = found.keep(files.key_line, &key_field, private_key(&files.key_file, &provider));
    let certified = match (chain, key) {
        (Some(chain), Some(key)) => {
            let matched = matching_pair(chain, key, &files.cert_file);
            found.keep(files.key_line, &key_field, matched)
        }
        _ => None,
    };
    let client_verifier = files.client_ca_file.as_ref().and_then(|(path, line)| {
        let field = format!("server.tls.client_ca_file {}", path.display());
        found.keep(*line, field, client_verifier(path, provider.clone()))
    });
    match (certified, leaf) {
        (Some(certified), Some((not_after, serial))) if found.problems.is_empty() => Ok(TlsMaterial {
            certified,
            client_verifier,
            not_after,
            serial,
            cert_file: files.cert_file.clone(),
        }),
        _ => Err(Problems(found.problems)),
    }
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1), loaded by the provider.
fn private_key(path: &Path, provider: &CryptoProvider) -> Result<Arc<dyn SigningKey>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| "no private key found (PEM PKCS#8, PKCS#1 or SEC1 expected)".to_string())?;
    provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("unsupported private key: {e}"))
}

/// The chain with its key, refused when the key is not the leaf's.
fn matching_pair(
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
    cert_file: &Path,
) -> Result<Arc<CertifiedKey>, String> {
    let ck = CertifiedKey::new(chain, key);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(e) => {
            let why = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    "does not match the certificate".to_string()
                }
                other => format!("cannot be checked against the certificate: {other}"),
            };
            Err(format!("the private key {why} in {}", cert_file.display()))
        }
    }
}

/// Every certificate of a PEM file, each checked to be an X.509 certificate.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut certs = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let c = c.map_err(|e| format!("certificate {} is not valid PEM: {e}", i + 1))?;
        x509_parser::parse_x509_certificate(&c)
            .map_err(|e| format!("certificate {} is not an X.509 certificate: {e}", i + 1))?;
        certs.push(c);
    }
    if certs.is_empty() {
        return Err("no certificate found (PEM \"BEGIN CERTIFICATE\" expected)".into());
    }
    Ok(certs)
}

/// The leaf's notAfter (Unix seconds) and serial (hex).
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(i64, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    Ok((
        cert.validity().not_after.timestamp(),
        hex::encode(cert.tbs_certificate.raw_serial()),
    ))
}

fn client_verifier(path: &Path, provider: Arc<CryptoProvider>) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let cas = read_certs(path)?;
    let mut roots = RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        roots
            .add(ca)
            .map_err(|e| format!("certificate {} cannot be a trust anchor: {e}", i + 1))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("cannot verify client certificates with it: {e}"))
}

/// A warning when a certificate expires within [`EXPIRY_WARNING_SECS`] of `now` (Unix
/// seconds), or has expired; `None` otherwise.
fn expiry_warning(cert_file: &Path, serial: &str, not_after: i64, now: i64) -> Option<String> {
    let left = not_after - now;
    if left >= EXPIRY_WARNING_SECS {
        return None;
    }
    let file = cert_file.display();
    Some(if left <= 0 {
        format!(
            "server.tls.cert_file {file}: the certificate (serial {serial}) expired {} day(s) ago",
            (-left) / 86_400
        )
    } else {
        format!(
            "server.tls.cert_file {file}: the certificate (serial {serial}) expires in {} day(s), {} hour(s)",
            left / 86_400,
            (left % 86_400) / 3_600
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_warning_within_14_days_only() {
        let now = 1_800_000_000;
        let warn = |not_after| expiry_warning(Path::new("origin.pem"), "0a", not_after, now);
        assert_eq!(warn(now + EXPIRY_WARNING_SECS), None);
        assert_eq!(warn(now + 90 * 86_400), None);
        let soon = warn(now + 3 * 86_400 + 7_200).unwrap();
        assert!(soon.contains("expires in 3 day(s), 2 hour(s)"), "{soon}");
        assert!(soon.contains("origin.pem") && soon.contains("serial 0a"), "{soon}");
        let gone = warn(now - 2 * 86_400).unwrap();
        assert!(gone.contains("expired 2 day(s) ago"), "{gone}");
    }
}
