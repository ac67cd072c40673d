//! TLS on the proxy listener (`[server.tls]`, CONTRACT §11): rustls through pingora, HTTP/1.1
//! and h2 by ALPN, and Cloudflare Authenticated Origin Pulls (a client certificate signed by
//! `client_ca_file` is required at the handshake).
//!
//! pingora builds its rustls `ServerConfig` once, at start. To let SIGHUP change the
//! certificate, key and client CA without a restart, the listener gets a certificate
//! resolver and a client-certificate verifier that both read one [`ArcSwap`]ed
//! [`TlsMaterial`]: a reload stores new material, new handshakes use it, and connections
//! already established keep the session they negotiated.
//!
//! A resumed TLS session skips certificate verification: it carries the client certificate
//! of the session it resumes. So that a reload which replaces `client_ca_file` also binds
//! resumed sessions, pingora's post-handshake callback checks every connection's client
//! certificate against the CA in force and marks the connection when that CA does not
//! accept it ([`ClientCertNoLongerTrusted`]); the proxy closes such a connection before its
//! first request reaches the pipeline. (pingora builds the rustls `ServerConfig` itself, so
//! its session cache cannot be emptied on reload.)
//!
//! Counting: rustls and pingora do not report a failed handshake to the application (pingora
//! only logs it), so the gateway counts handshakes *begun* (a ClientHello reached the
//! certificate resolver) against handshakes *completed* (pingora's post-handshake callback);
//! the difference is the refused and abandoned ones. A client certificate the verifier
//! refuses (another CA, expired, malformed) is counted exactly; a client that sends no
//! certificate at all is refused by rustls before the verifier sees anything.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::config::settings::TlsFiles;
use crate::config::{Problem, Problems};
use crate::metrics::TlsMetrics;

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

fn provider() -> Arc<CryptoProvider> {
    // The provider pingora installs (ring); ours is the same, built explicitly so loading
    // does not depend on pingora having started.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the TLS files (start, `check`, every reload). Every problem is reported,
/// at the config line that names the file: unreadable files, no certificate, a certificate
/// that does not parse, no or an unsupported private key, a key that does not match the
/// leaf, a client CA file without a usable CA certificate.
pub(crate) fn load(files: &TlsFiles, config_path: &Path) -> Result<TlsMaterial, Problems> {
    let mut problems = Vec::new();
    let at = |line: usize, message: String| Problem {
        file: config_path.to_path_buf(),
        line: Some(line),
        message,
    };
    let provider = provider();

    let chain = match read_certs(&files.cert_file) {
        Ok(chain) => Some(chain),
        Err(e) => {
            problems.push(at(
                files.cert_line,
                format!("server.tls.cert_file {}: {e}", files.cert_file.display()),
            ));
            None
        }
    };
    let leaf = chain
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|leaf| leaf_facts(leaf).ok());

    let key = std::fs::read(&files.key_file)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|pem| {
            PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|_| "no private key found (PEM PKCS#8, PKCS#1 or SEC1 expected)".to_string())
        })
        .and_then(|der| {
            provider
                .key_provider
                .load_private_key(der)
                .map_err(|e| format!("unsupported private key: {e}"))
        });
    let key = match key {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(at(
                files.key_line,
                format!("server.tls.key_file {}: {e}", files.key_file.display()),
            ));
            None
        }
    };

    let certified = match (chain, key) {
        (Some(chain), Some(key)) => {
            let ck = CertifiedKey::new(chain, key);
            match ck.keys_match() {
                Ok(()) => Some(Arc::new(ck)),
                Err(e) => {
                    let why = match e {
                        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                            "does not match the certificate".to_string()
                        }
                        other => format!("cannot be checked against the certificate: {other}"),
                    };
                    problems.push(at(
                        files.key_line,
                        format!(
                            "server.tls.key_file {}: the private key {why} in {}",
                            files.key_file.display(),
                            files.cert_file.display()
                        ),
                    ));
                    None
                }
            }
        }
        _ => None,
    };

    let client_verifier = match &files.client_ca_file {
        None => None,
        Some((path, line)) => match client_verifier(path, provider.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(at(*line, format!("server.tls.client_ca_file {}: {e}", path.display())));
                None
            }
        },
    };

    match (certified, leaf) {
        (Some(certified), Some((not_after, serial))) if problems.is_empty() => Ok(TlsMaterial {
            certified,
            client_verifier,
            not_after,
            serial,
            cert_file: files.cert_file.clone(),
        }),
        _ => Err(Problems(problems)),
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

impl TlsMaterial {
    /// What `check`, the start and a reload say about the certificate's expiry (see
    /// [`expiry_warning`]).
    pub(crate) fn expiry_warning(&self, now: i64) -> Option<String> {
        expiry_warning(&self.cert_file, &self.serial, self.not_after, now)
    }
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

/// The TLS material in force and the handshake counters, shared by the listener's resolver,
/// verifier and callback and by the reload path.
pub(crate) struct TlsState {
    current: ArcSwap<TlsMaterial>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("current", &*self.current.load())
            .finish()
    }
}

impl TlsState {
    /// State serving `material` from the first handshake on.
    pub(crate) fn new(material: TlsMaterial, metrics: TlsMetrics) -> Arc<TlsState> {
        metrics.cert_expiry.set(material.not_after);
        Arc::new(TlsState {
            current: ArcSwap::from_pointee(material),
            metrics,
        })
    }

    /// Makes `material` the one new handshakes use (reload). Connections already
    /// established are not touched.
    pub(crate) fn install(&self, material: TlsMaterial) {
        self.metrics.cert_expiry.set(material.not_after);
        self.current.store(Arc::new(material));
    }

    /// pingora listener settings that serve this state: rustls, ALPN h2 then HTTP/1.1, the
    /// swappable certificate, and (when `client_ca_file` was configured) a required client
    /// certificate.
    pub(crate) fn listener_settings(self: &Arc<Self>) -> pingora::Result<TlsSettings> {
        let mut settings = TlsSettings::with_callbacks(Box::new(Completed(self.clone())))?;
        settings.set_cert_resolver(Arc::new(Resolver(self.clone())));
        if self.current.load().client_verifier.is_some() {
            settings.set_client_cert_verifier(Arc::new(ClientCa(self.clone())));
        }
        settings.enable_h2();
        Ok(settings)
    }
}

/// Serves the certificate in force; each call is one ClientHello, i.e. one handshake begun.
#[derive(Debug)]
struct Resolver(Arc<TlsState>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.metrics.handshakes_begun.inc();
        Some(self.0.current.load().certified.clone())
    }
}

/// Requires a client certificate that chains to the client CA in force.
///
/// No CA names are hinted to clients (the hint list cannot borrow from swappable state);
/// a client then offers any certificate it has, which is what Cloudflare does anyway.
#[derive(Debug)]
struct ClientCa(Arc<TlsState>);

impl ClientCa {
    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.0.current.load().client_verifier.clone()
    }
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Fail closed: configured for client auth but no verifier loaded refuses everyone.
        let result = match self.verifier() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("no client CA loaded".into())),
        };
        if let Err(e) = &result {
            self.0.metrics.client_certs_rejected.inc();
            tracing::debug!("client certificate refused: {e}");
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.verifier() {
            Some(v) => v.verify_tls12_signature(message, cert, dss),
            None => Err(rustls::Error::General("no client CA loaded".into())),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.verifier() {
            Some(v) => v.verify_tls13_signature(message, cert, dss),
            None => Err(rustls::Error::General("no client CA loaded".into())),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self.verifier() {
            Some(v) => v.supported_verify_schemes(),
            None => provider().signature_verification_algorithms.supported_schemes(),
        }
    }
}

/// Marks a connection whose client certificate the client CA in force does not accept (a
/// session resumed from before a reload that replaced `client_ca_file`). The proxy closes
/// it without an answer before its first request reaches the pipeline.
#[derive(Debug)]
pub(crate) struct ClientCertNoLongerTrusted;

/// Whether pingora's digest of a connection carries the [`ClientCertNoLongerTrusted`] mark.
pub(crate) fn client_cert_no_longer_trusted(digest: Option<&pingora::protocols::Digest>) -> bool {
    digest
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some_and(|ssl| ssl.extension.get::<ClientCertNoLongerTrusted>().is_some())
}

/// pingora's post-handshake callback: counts the handshake and, with Authenticated Origin
/// Pulls on, checks the connection's client certificate against the client CA in force (a
/// full handshake passes again; a resumed one is checked here for the first time since the
/// session began).
struct Completed(Arc<TlsState>);

#[async_trait]
impl TlsAccept for Completed {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.metrics.handshakes_completed.inc();
        let verifier = self.0.current.load().client_verifier.clone()?;
        let trusted = match tls.peer_cert_chain_der() {
            Some([leaf, intermediates @ ..]) => verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .is_ok(),
            _ => false,
        };
        if trusted {
            return None;
        }
        self.0.metrics.client_certs_rejected.inc();
        tracing::info!("TLS session with a client certificate the client CA in force does not accept: closing it");
        Some(Arc::new(ClientCertNoLongerTrusted))
    }
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
