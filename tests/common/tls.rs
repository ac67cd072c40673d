//! A TLS proxy listener for tests that need HTTP/2 (ALPN `h2`) rather than certificates:
//! one self-signed server certificate made with the `openssl` CLI, a rustls client that
//! trusts it, and an h2 client that can send bodies with or without `content-length`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{self_signed_p256, TempDir};

/// Where the certificate and key go in a gateway's config dir.
pub const SITE_CERT: &str = "tls/site.pem";
pub const SITE_KEY: &str = "tls/site.key";

/// A self-signed certificate for localhost / 127.0.0.1, as PEM bytes.
pub struct Site {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl Site {
    pub fn new() -> Site {
        let dir = TempDir::new("site");
        self_signed_p256(
            &dir.path,
            "site.key",
            "site.pem",
            "/CN=localhost",
            &[
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ],
        );
        let read = |name: &str| std::fs::read(dir.path.join(name)).unwrap();
        Site {
            cert: read("site.pem"),
            key: read("site.key"),
        }
    }

    /// The files for `Gateway::start`.
    pub fn files(&self) -> Vec<(&'static str, &[u8])> {
        vec![(SITE_CERT, self.cert.as_slice()), (SITE_KEY, self.key.as_slice())]
    }

    /// A client that trusts this certificate and offers `alpn`.
    pub fn client(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(&self.cert).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

/// `config` with a `[server.tls]` table naming this module's certificate files.
pub fn with_tls(config: &str) -> String {
    let tls = format!("\n[server.tls]\ncert_file = \"{SITE_CERT}\"\nkey_file = \"{SITE_KEY}\"\n");
    assert!(
        config.contains("\n[upstream]\n"),
        "the config has no [upstream] to put [server.tls] before"
    );
    config.replacen("\n[upstream]\n", &format!("{tls}\n[upstream]\n"), 1)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A TLS connection to `addr` as `localhost`.
pub async fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// An h2 answer.
#[derive(Debug)]
pub struct H2Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl H2Response {
    /// The first value of a header (names are lower-case in h2).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One h2 request on a fresh TLS connection. The body (if any) is sent in DATA frames of
/// `frame` bytes; `content-length` is declared only when given in `headers`.
pub fn h2_request(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<H2Response, String> {
    runtime().block_on(async {
        let s = tls_connect(addr, config).await.map_err(|e| format!("handshake: {e}"))?;
        let (client, conn) = h2::client::handshake(s)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        let driver = tokio::spawn(conn);
        let mut client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{target}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (resp, mut send) = client
            .send_request(req.body(()).unwrap(), body.is_none())
            .map_err(|e| format!("h2 send: {e}"))?;
        if let Some(b) = body {
            // two DATA frames, so "one frame" is not what makes it work
            let half = b.len() / 2;
            send.send_data(Bytes::copy_from_slice(&b[..half]), false)
                .map_err(|e| format!("h2 data: {e}"))?;
            send.send_data(Bytes::copy_from_slice(&b[half..]), true)
                .map_err(|e| format!("h2 data: {e}"))?;
        }
        let resp = resp.await.map_err(|e| format!("h2 response: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut stream = resp.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.map_err(|e| format!("h2 body: {e}"))?;
            let _ = stream.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        drop(client);
        driver.abort();
        Ok(H2Response { status, headers, body })
    })
}
