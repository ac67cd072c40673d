//! TLS on the proxy listener (`[server.tls]`, docs/reference.md#tls-and-cloudflare): rustls through pingora, HTTP/1.1
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
//!
//! Reading and checking the files (and the expiry warning) is `config::tls_files`: this
//! module only serves what config loaded.

use std::any::Any;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::tls_files::{provider, TlsMaterial};
use crate::metrics::TlsMetrics;

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
        if self.current.load().client_verifier().is_some() {
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
        Some(self.0.current.load().certified().clone())
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
        self.0.current.load().client_verifier().cloned()
    }

    /// The verifier in force, or the refusal when none is loaded. Fail closed: configured
    /// for client auth but no verifier loaded refuses everyone.
    fn loaded(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.verifier()
            .ok_or_else(|| rustls::Error::General("no client CA loaded".into()))
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
        let result = self
            .loaded()
            .and_then(|v| v.verify_client_cert(end_entity, intermediates, now));
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
        self.loaded()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.loaded()?.verify_tls13_signature(message, cert, dss)
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
        let verifier = self.0.current.load().client_verifier().cloned()?;
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
