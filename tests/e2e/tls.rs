//! End-to-end: TLS on the proxy listener (`[server.tls]`, docs/reference.md#tls-and-cloudflare) against the real
//! binary. Certificates are made here with the `openssl` CLI in a temp dir (nothing is
//! committed); the clients are rustls (HTTP/1.1 written by hand, h2 through the `h2` crate).
//!
//! Covered: HTTP/1.1 and h2 by ALPN with the upstream headers (docs/reference.md#upstream-request); Authenticated Origin Pulls
//! (no client certificate, or one from another CA, fails the handshake and nothing reaches
//! the upstream; the right CA's certificate passes); SIGHUP swapping the certificate (new
//! serial on new connections, an open connection untouched) and the client CA; a broken
//! certificate file keeping the old one and counting a failure; `check` on bad and expiring
//! files; the `"cloudflare"` trusted-proxies preset.

use std::sync::Arc;

use crate::common::*;
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

// ------------------------------------------------------------------------------------
// certificates, made with the openssl CLI
// ------------------------------------------------------------------------------------

/// A directory of certificates made for one test.
struct Pki {
    dir: TempDir,
}

/// A certificate and its key, as PEM bytes.
#[derive(Clone)]
struct Issued {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: TempDir::new("pki"),
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path.join(name)).unwrap()
    }

    /// A self-signed CA named `name` (files `<name>.pem`, `<name>.key`).
    fn ca(&self, name: &str) -> Issued {
        self_signed_p256(
            &self.dir.path,
            &format!("{name}.key"),
            &format!("{name}.pem"),
            &format!("/CN=authgate test {name}"),
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Issued {
            cert: self.read(&format!("{name}.pem")),
            key: self.read(&format!("{name}.key")),
        }
    }

    /// A leaf certificate signed by CA `ca`, with this serial (hex) and lifetime; a server
    /// certificate for localhost/127.0.0.1, or a client certificate.
    fn leaf(&self, name: &str, ca: &str, serial_hex: &str, days: u32, server: bool) -> Issued {
        let ext = if server {
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        } else {
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        };
        self.dir.write(&format!("{name}.ext"), ext.as_bytes());
        let d = &self.dir.path;
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let subject = format!("/CN={}", if server { "localhost" } else { name });
        let mut args = vec!["req", "-new"];
        args.extend_from_slice(&NEW_P256_KEY);
        args.extend_from_slice(&[&key, "-out", &csr, "-subj", &subject]);
        openssl(d, &args);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &format!("0x{serial_hex}"),
                "-days",
                &days.to_string(),
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
        Issued {
            cert: self.read(&format!("{name}.pem")),
            key: self.read(&format!("{name}.key")),
        }
    }
}

/// The serial (hex) and notAfter of the first certificate in a PEM.
fn serial_and_expiry(pem: &[u8]) -> (String, i64) {
    let der = CertificateDer::from_pem_slice(pem).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    (
        hex::encode(c.tbs_certificate.raw_serial()),
        c.validity().not_after.timestamp(),
    )
}

// ------------------------------------------------------------------------------------
// the gateway with [server.tls]
// ------------------------------------------------------------------------------------

const TLS_CERT: &str = "tls/origin.pem";
const TLS_KEY: &str = "tls/origin.key";
const TLS_CLIENT_CA: &str = "tls/origin-pull-ca.pem";

/// The base e2e config with a `[server.tls]` table (and `client_ca_file` when `aop`).
fn tls_config(aop: bool) -> String {
    let mut tls = format!("\n[server.tls]\ncert_file = \"{TLS_CERT}\"\nkey_file = \"{TLS_KEY}\"\n");
    if aop {
        tls.push_str(&format!("client_ca_file = \"{TLS_CLIENT_CA}\"\n"));
    }
    let base = base_config();
    assert!(base.contains("\n[upstream]\n"));
    base.replacen("\n[upstream]\n", &format!("{tls}\n[upstream]\n"), 1)
}

fn start_tls(up: &Upstream, server: &Issued, client_ca: Option<&Issued>) -> Gateway {
    let mut files: Vec<(&str, &[u8])> = vec![(TLS_CERT, server.cert.as_slice()), (TLS_KEY, server.key.as_slice())];
    if let Some(ca) = client_ca {
        files.push((TLS_CLIENT_CA, ca.cert.as_slice()));
    }
    Gateway::start(&up.address(), &tls_config(client_ca.is_some()), &base_policy(), &files)
}

// ------------------------------------------------------------------------------------
// rustls clients
// ------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A client config that trusts `server_ca`, offers `alpn`, and presents `client` if given.
fn client_config(server_ca: &Issued, client: Option<&Issued>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&server_ca.cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(&c.cert).unwrap()],
                PrivateKeyDer::from_pem_slice(&c.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A response over TLS, with the serial of the certificate the server presented.
#[derive(Debug)]
struct TlsResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    server_serial: String,
    alpn: Option<Vec<u8>>,
}

impl TlsResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn peer_serial(s: &TlsStream<TcpStream>) -> String {
    let certs = s.get_ref().1.peer_certificates().expect("server certificate");
    let (_, c) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    hex::encode(c.tbs_certificate.raw_serial())
}

/// Writes one HTTP/1.1 request and reads one response (Content-Length or chunked bodies).
async fn h1_exchange(
    s: &mut TlsStream<TcpStream>,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<TlsResponse> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed before a response head ({} bytes)", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .expect("the test responses carry Content-Length");
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed mid-body",
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(TlsResponse {
        status,
        headers,
        body,
        server_serial: peer_serial(s),
        alpn: s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
    })
}

/// Runs `exchange` on a fresh TLS connection. `Err` when the handshake or the exchange fails.
fn over_tls<F, Fut>(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    exchange: F,
) -> Result<TlsResponse, String>
where
    F: FnOnce(TlsStream<TcpStream>) -> Fut,
    Fut: std::future::Future<Output = Result<TlsResponse, String>>,
{
    runtime().block_on(async {
        let s = tls_connect(addr, config).await.map_err(|e| format!("handshake: {e}"))?;
        exchange(s).await
    })
}

/// One HTTP/1.1 GET on a fresh TLS connection.
fn h1_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<TlsResponse, String> {
    over_tls(addr, config, |mut s| async move {
        h1_exchange(&mut s, target, headers)
            .await
            .map_err(|e| format!("exchange: {e}"))
    })
}

/// [`h1_get`] or [`h2_get`].
type Getter = fn(std::net::SocketAddr, Arc<rustls::ClientConfig>, &str, &[(&str, &str)]) -> Result<TlsResponse, String>;

/// One h2 GET on a fresh TLS connection.
fn h2_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<TlsResponse, String> {
    over_tls(addr, config, |s| async move {
        let serial = peer_serial(&s);
        let alpn = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let (client, conn) = h2::client::handshake(s)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        let driver = tokio::spawn(conn);
        let mut client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
        let mut req = http::Request::builder()
            .method("GET")
            .uri(format!("https://localhost{target}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (resp, _) = client
            .send_request(req.body(()).unwrap(), true)
            .map_err(|e| format!("h2 send: {e}"))?;
        let resp = resp.await.map_err(|e| format!("h2 response: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body_stream = resp.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = body_stream.data().await {
            let chunk: Bytes = chunk.map_err(|e| format!("h2 body: {e}"))?;
            let _ = body_stream.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        drop(client);
        driver.abort();
        Ok(TlsResponse {
            status,
            headers,
            body,
            server_serial: serial,
            alpn,
        })
    })
}

/// A keep-alive HTTP/1.1 connection over TLS, kept open across a reload.
struct KeptConn {
    rt: tokio::runtime::Runtime,
    stream: TlsStream<TcpStream>,
}

impl KeptConn {
    fn open(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> KeptConn {
        let rt = runtime();
        let stream = rt.block_on(tls_connect(addr, config)).unwrap();
        KeptConn { rt, stream }
    }

    fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> TlsResponse {
        let KeptConn { rt, stream } = self;
        rt.block_on(h1_exchange(stream, target, headers)).unwrap()
    }
}

/// Path, token header and org of a partner request that passes every layer.
fn acme_request() -> (String, String) {
    (format!("/partner/v1/orgs/{ORG_ACME}/members"), bearer(&token("acme")))
}

// ------------------------------------------------------------------------------------
// tests
// ------------------------------------------------------------------------------------

#[test]
fn tls_serves_http1_and_h2_with_the_upstream_headers() {
    let pki = Pki::new();
    let ca = pki.ca("server-ca");
    let server = pki.leaf("origin", "server-ca", "1001", 30, true);
    let up = Upstream::start();
    let gw = start_tls(&up, &server, None);
    let (path, auth) = acme_request();

    let clients: [(&[u8], Getter); 2] = [(b"http/1.1", h1_get), (b"h2", h2_get)];
    for (alpn, get) in clients {
        let label = String::from_utf8_lossy(alpn).into_owned();
        let before = up.count();
        let r = get(
            gw.addr,
            client_config(&ca, None, alpn),
            &path,
            &[
                ("Authorization", &auth),
                ("X-Request-Id", "tls-req-1"),
                ("X-Partner-Id", "evil"),
            ],
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(r.status, 200, "{label}: {r:?} {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.alpn.as_deref(), Some(alpn), "{label}: negotiated ALPN");
        assert_eq!(r.header("x-upstream"), Some("yes"), "{label}: proxied");
        assert_eq!(r.header("x-request-id"), Some("tls-req-1"), "{label}");
        assert_eq!(r.server_serial, "1001", "{label}");
        let seen = up.wait_count(before + 1);
        assert_eq!(seen.len(), before + 1, "{label}: one request upstream");
        let rec = seen.last().unwrap();
        assert_eq!(rec.path(), path, "{label}");
        assert_eq!(rec.one("x-partner-id"), Some("acme"), "{label}: upstream X-Partner-Id");
        assert_eq!(rec.one("x-real-ip"), Some("127.0.0.1"), "{label}: upstream X-Real-IP");
        assert_eq!(
            rec.one("x-forwarded-for"),
            Some("127.0.0.1"),
            "{label}: upstream X-Forwarded-For"
        );
        assert_eq!(
            rec.one("x-request-id"),
            Some("tls-req-1"),
            "{label}: upstream X-Request-Id"
        );
        assert!(rec.one("authorization").is_some(), "{label}");
    }

    // a denial is written by the gateway over TLS too
    let r = h2_get(gw.addr, client_config(&ca, None, b"h2"), &path, &[]).unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));

    // plain HTTP on the TLS port gets no HTTP answer
    let plain = try_request(gw.addr, "GET", "/health", &[], None);
    assert!(
        plain.is_err(),
        "plain HTTP must not be served on the TLS listener: {plain:?}"
    );

    // the expiry gauge is the served leaf's notAfter; handshakes are counted
    let (_, not_after) = serial_and_expiry(&server.cert);
    let m = gw.metrics();
    assert_eq!(m.sum("authgate_tls_cert_expiry_seconds", &[]), not_after as f64);
    assert!(
        m.sum("authgate_tls_handshakes_completed_total", &[]) >= 3.0,
        "{}",
        m.text
    );
}

#[test]
fn authenticated_origin_pulls_refuse_the_handshake_without_the_right_client_certificate() {
    let pki = Pki::new();
    let server_ca = pki.ca("server-ca");
    let server = pki.leaf("origin", "server-ca", "1001", 30, true);
    let pull_ca = pki.ca("pull-ca");
    let other_ca = pki.ca("other-ca");
    let good = pki.leaf("edge", "pull-ca", "3001", 30, false);
    let stranger = pki.leaf("stranger", "other-ca", "4001", 30, false);
    let up = Upstream::start();
    let gw = start_tls(&up, &server, Some(&pull_ca));
    let (path, auth) = acme_request();
    let headers = [("Authorization", auth.as_str())];
    // the request over a fresh connection with `client`'s certificate, h2 or HTTP/1.1 by `alpn`
    let get_with = |client: Option<&Issued>, alpn: &[u8]| {
        let config = client_config(&server_ca, client, alpn);
        if alpn == b"h2" {
            h2_get(gw.addr, config, &path, &headers)
        } else {
            h1_get(gw.addr, config, &path, &headers)
        }
    };

    for (label, client, alpn) in [
        ("no client certificate, h1", None, &b"http/1.1"[..]),
        ("no client certificate, h2", None, &b"h2"[..]),
        ("a certificate from another CA", Some(&stranger), &b"http/1.1"[..]),
    ] {
        let r = get_with(client, alpn);
        // TLS 1.3: the client may finish its side first and learn of the refusal from the
        // server's alert on its first read; either way no HTTP response arrives (the
        // handshake counters below show it was the handshake that failed).
        let err = r.expect_err(label);
        eprintln!("{label}: {err}");
    }
    assert_eq!(up.count(), 0, "nothing reached the upstream: {:?}", up.records());
    let m = gw.wait_metric_where("a rejected client certificate", |m| {
        m.sum("authgate_tls_client_certs_rejected_total", &[]) >= 1.0
    });
    assert_eq!(m.sum("authgate_tls_handshakes_begun_total", &[]), 3.0, "{}", m.text);
    assert_eq!(m.sum("authgate_tls_handshakes_completed_total", &[]), 0.0, "{}", m.text);
    assert_eq!(
        m.sum("authgate_tls_client_certs_rejected_total", &[]),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.sum("authgate_requests_total", &[]),
        0.0,
        "nothing reached the pipeline"
    );

    // the right CA's certificate passes, on both protocols
    let r = get_with(Some(&good), b"http/1.1").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let r = get_with(Some(&good), b"h2").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.count(), 2);
    let m = gw.metrics();
    assert_eq!(m.sum("authgate_tls_handshakes_begun_total", &[]), 5.0, "{}", m.text);
    assert_eq!(m.sum("authgate_tls_handshakes_completed_total", &[]), 2.0, "{}", m.text);

    // SIGHUP re-reads client_ca_file: after switching to the other CA, the edge certificate
    // is refused and the stranger's accepted. A client that keeps its session cache first
    // makes a session under the old CA, then tries to resume it after the switch.
    let resuming = client_config(&server_ca, Some(&good), b"http/1.1");
    let r = h1_get(gw.addr, resuming.clone(), &path, &headers).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.count(), 3);
    gw.write(TLS_CLIENT_CA, &other_ca.cert);
    gw.reload();
    let resumed = runtime().block_on(async {
        let mut s = tls_connect(gw.addr, resuming.clone()).await.unwrap();
        let kind = s.get_ref().1.handshake_kind();
        (kind, h1_exchange(&mut s, &path, &headers).await)
    });
    assert_eq!(
        resumed.0,
        Some(rustls::HandshakeKind::Resumed),
        "the client resumed its session"
    );
    assert!(
        resumed.1.is_err(),
        "a resumed session from before the CA switch gets no answer: {:?}",
        resumed.1
    );
    assert_eq!(up.count(), 3, "and nothing reaches the upstream");
    gw.wait_metric("authgate_tls_client_certs_rejected_total", &[], 2.0);
    let refused = get_with(Some(&good), b"http/1.1");
    assert!(refused.is_err(), "{refused:?}");
    let r = get_with(Some(&stranger), b"http/1.1").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.count(), 4);
    // requests are counted in pingora's logging phase, which may run after the response
    assert_eq!(gw.wait_metric("authgate_requests_total", &[], 4.0), 4.0);
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_a_broken_file_keeps_the_old_one() {
    let pki = Pki::new();
    let ca = pki.ca("server-ca");
    let first = pki.leaf("origin-1", "server-ca", "1001", 30, true);
    let second = pki.leaf("origin-2", "server-ca", "2002", 60, true);
    let up = Upstream::start();
    let gw = start_tls(&up, &first, None);
    let (path, auth) = acme_request();
    let headers = [("Authorization", auth.as_str())];
    // A fresh client (no session to resume) per new connection: a resumed session presents no
    // certificate at all, and the client reports the one of the session it resumed.
    let config = || client_config(&ca, None, b"http/1.1");

    let r = h1_get(gw.addr, config(), &path, &headers).unwrap();
    assert_eq!((r.status, r.server_serial.as_str()), (200, "1001"));
    let mut kept = KeptConn::open(gw.addr, config());
    assert_eq!(kept.get(&path, &headers).status, 200);

    // new files, SIGHUP: new connections present the new serial
    gw.write(TLS_CERT, &second.cert);
    gw.write(TLS_KEY, &second.key);
    gw.reload();
    let r = h1_get(gw.addr, config(), &path, &headers).unwrap();
    assert_eq!((r.status, r.server_serial.as_str()), (200, "2002"));
    let r = h2_get(gw.addr, client_config(&ca, None, b"h2"), &path, &headers).unwrap();
    assert_eq!((r.status, r.server_serial.as_str()), (200, "2002"));
    assert_eq!(
        gw.metrics().sum("authgate_tls_cert_expiry_seconds", &[]),
        serial_and_expiry(&second.cert).1 as f64
    );
    // the connection opened before the reload is untouched: same session, still served
    let r = kept.get(&path, &headers);
    assert_eq!((r.status, r.server_serial.as_str()), (200, "1001"));

    // a broken certificate file: the reload fails as a whole, the certificate in force stays
    let failures = gw.reloads("failure");
    gw.write(
        TLS_CERT,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    gw.reload_expect("failure");
    assert_eq!(gw.reloads("failure"), failures + 1.0);
    let r = h1_get(gw.addr, config(), &path, &headers).unwrap();
    assert_eq!((r.status, r.server_serial.as_str()), (200, "2002"));
    wait_for(DEADLINE, "the log to name the bad file", || {
        gw.log_text()
            .contains("reload rejected, previous policy kept")
            .then_some(())
    });
    assert!(gw.log_text().contains("server.tls.cert_file"), "{}", gw.log_text());

    // a key that does not match the certificate is refused the same way
    gw.write(TLS_CERT, &second.cert);
    gw.write(TLS_KEY, &first.key);
    gw.reload_expect("failure");
    let r = h1_get(gw.addr, config(), &path, &headers).unwrap();
    assert_eq!((r.status, r.server_serial.as_str()), (200, "2002"));

    // all or nothing: a good certificate with a bad policy file changes nothing either
    gw.write(TLS_CERT, &first.cert);
    gw.write(TLS_KEY, &first.key);
    gw.write_policy("[[partner]]\nid = \n");
    gw.reload_expect("failure");
    let r = h1_get(gw.addr, config(), &path, &headers).unwrap();
    assert_eq!((r.status, r.server_serial.as_str()), (200, "2002"));
    // fixed policy: now the first certificate comes back
    gw.write_policy(&base_policy());
    gw.reload();
    let r = h1_get(gw.addr, config(), &path, &headers).unwrap();
    assert_eq!((r.status, r.server_serial.as_str()), (200, "1001"));
    assert_eq!(up.count(), 9);
}

// ------------------------------------------------------------------------------------
// `authgate check` and the Cloudflare preset
// ------------------------------------------------------------------------------------

/// `authgate check` on `config` with the base policy and `files` beside it.
fn check(config: &str, files: &[(&str, &[u8])]) -> CliOutput {
    ConfDir::new("check-tls", config, &base_policy(), files).check()
}

/// Asserts that check reported `words` at the line of `[server.tls]`'s `key` in `config`.
fn assert_reported(out: &CliOutput, config: &str, key: &str, words: &str) {
    let at = format!(
        "authgate.toml:{}: server.tls.{key}",
        line_of(config, &format!("{key} ="))
    );
    assert!(
        out.stdout.contains(&at) && out.stdout.contains(words),
        "wanted {at}…{words} in:\n{}",
        out.stdout
    );
}

/// The three files of `[server.tls]` with client certificates.
fn tls_files<'a>(cert: &'a [u8], key: &'a [u8], client_ca: &'a [u8]) -> [(&'static str, &'a [u8]); 3] {
    [(TLS_CERT, cert), (TLS_KEY, key), (TLS_CLIENT_CA, client_ca)]
}

#[test]
fn check_validates_the_tls_files_and_warns_before_expiry() {
    let pki = Pki::new();
    pki.ca("server-ca");
    let good = pki.leaf("origin", "server-ca", "1001", 90, true);
    let other = pki.leaf("other", "server-ca", "1002", 90, true);
    let soon = pki.leaf("soon", "server-ca", "1003", 3, true);
    let pull_ca = pki.ca("pull-ca");
    let config = tls_config(true);

    // good files: ok, no warning
    let out = check(&config, &tls_files(&good.cert, &good.key, &pull_ca.cert));
    assert_eq!(out.code(), Some(0), "{}", out.all());
    assert_eq!(out.stdout.trim(), "ok");
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);

    // expiring within 14 days: still ok and exit 0, with a warning on stderr
    let out = check(&config, &tls_files(&soon.cert, &soon.key, &pull_ca.cert));
    assert_eq!(out.code(), Some(0), "{}", out.all());
    assert_eq!(out.stdout.trim(), "ok");
    assert!(
        out.stderr.contains("warning")
            && (out.stderr.contains("expires in 2 day(s)") || out.stderr.contains("expires in 3 day(s), 0 hour(s)"))
            && out.stderr.contains("origin.pem"),
        "{}",
        out.stderr
    );

    // a key that is not the certificate's, and a client CA file without a certificate: both
    // reported at their config lines, exit 1
    let out = check(&config, &tls_files(&good.cert, &other.key, b"not a certificate\n"));
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert_reported(&out, &config, "key_file", "does not match");
    assert_reported(&out, &config, "client_ca_file", "no certificate found");

    // a missing certificate file and a garbage key
    let out = check(&config, &[(TLS_KEY, b"garbage"), (TLS_CLIENT_CA, &pull_ca.cert)]);
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert_reported(&out, &config, "cert_file", "cannot read");
    assert!(out.stdout.contains("no private key found"), "{}", out.stdout);

    // an unknown key in [server.tls] is an error like anywhere else
    let out = check(
        &config.replace("[server.tls]\n", "[server.tls]\nciphers = \"all\"\n"),
        &[],
    );
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.stdout.contains("ciphers"), "{}", out.stdout);

    // a gateway never starts on bad TLS files
    let files = tls_files(&good.cert, &other.key, &pull_ca.cert);
    let out = ConfDir::new("start-tls", &config, &base_policy(), &files).start_refused("bad TLS files");
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(out.stderr.contains("does not match"), "{}", out.stderr);
}

#[test]
fn check_accepts_the_cloudflare_preset() {
    let config = base_config()
        .replace("source = \"x-forwarded-for\"", "source = \"cf-connecting-ip\"")
        .replace(
            "trusted_proxies = [\"127.0.0.0/8\", \"::1/128\"]",
            "trusted_proxies = [\"cloudflare\", \"10.0.0.0/8\"]",
        );
    assert!(config.contains("\"cloudflare\""), "{config}");
    let out = check(&config, &[]);
    assert_eq!(out.code(), Some(0), "{}", out.all());
    assert_eq!(out.stdout.trim(), "ok");

    // the preset is a word for trusted_proxies only: misspelt, or in an allow list, it is an error
    let out = check(&config.replace("\"cloudflare\"", "\"Cloudflare\""), &[]);
    assert_eq!(out.code(), Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("trusted_proxies") && out.stdout.contains("\"cloudflare\""),
        "{}",
        out.stdout
    );
}

#[test]
fn the_cloudflare_preset_does_not_trust_a_peer_outside_cloudflare() {
    // loopback is not a Cloudflare range: CF-Connecting-IP from it is ignored (and stripped)
    let config = base_config()
        .replace("source = \"x-forwarded-for\"", "source = \"cf-connecting-ip\"")
        .replace(
            "trusted_proxies = [\"127.0.0.0/8\", \"::1/128\"]",
            "trusted_proxies = [\"cloudflare\"]",
        );
    let (up, gw) = base_with(&config);
    let r = gw.get_auth(
        format!("/partner/v1/orgs/{ORG_ACME}/members"),
        &token("acme"),
        &[("CF-Connecting-IP", "203.0.113.9")],
    );
    assert_eq!(r.status, 200, "{r}");
    let rec = up.last();
    assert_eq!(rec.one("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(rec.one("cf-connecting-ip"), None);
}
