//! End-to-end: no client holds the gateway (docs/reference.md#server) — `max_head_bytes`,
//! `send_timeout` on HTTP/1 and HTTP/2, the HTTP/2 handshake and idle deadlines — each
//! counted in `authgate_connections_closed_total{listener, reason}`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crate::common::tls::{self, Site};
use crate::common::*;

/// A gateway with `[server.tls]` (HTTP/1.1 and h2 by ALPN) and `server_extra` in `[server]`.
fn start_tls(up: &Upstream, site: &Site, server_extra: &str) -> Gateway {
    let config = Cfg {
        server_extra: server_extra.into(),
        ..Cfg::default()
    }
    .render();
    Gateway::start(&up.address(), &tls::with_tls(&config), &base_policy(), &site.files())
}

fn closed(gw: &Gateway, reason: &str, at_least: f64) -> f64 {
    gw.wait_metric(
        "authgate_connections_closed_total",
        &[("listener", "proxy"), ("reason", reason)],
        at_least,
    )
}

/// Reads until the peer closes (EOF or reset); what arrived before that.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("waiting for the gateway to close: {e}"),
        }
    }
}

/// Fault model: a request head is buffered up to pingora's own 1 MiB bound, so 200 clients
/// each sending a 1 MB unfinished head held 240 MB. Must hold: a head over `max_head_bytes`
/// gets 431 in the gateway's error shape and the connection is closed, before more of it is
/// buffered (the client is still sending when the answer comes); a head under the limit
/// passes; the close is counted.
#[test]
fn a_head_over_max_head_bytes_is_431_and_closed() {
    let (up, gw) = base_with(
        &Cfg {
            server_extra: "max_head_bytes = \"8KiB\"\n".into(),
            ..Cfg::default()
        }
        .render(),
    );
    let under = "a".repeat(6000);
    assert_eq!(gw.get("/public/under", &[("X-Pad", &under)]).status, 200);

    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /public/over HTTP/1.1\r\nHost: x\r\n").unwrap();
    // 1 MB of header lines that never end: the gateway must answer long before the end
    let line = format!("X-Pad: {}\r\n", "b".repeat(1000));
    let mut sent = 0;
    while sent < 1_000_000 {
        if s.write_all(line.as_bytes()).is_err() {
            break; // closed on us: the answer is waiting to be read
        }
        sent += line.len();
    }
    let answer = read_to_close(&mut s);
    let r = parse_response(&answer).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&answer)));
    assert_error(&r, 431, "head over max_head_bytes");
    assert_eq!(up.for_path("/public/over").len(), 0);
    closed(&gw, "head_too_large", 1.0);
}

/// Fault model: a client that stops reading a large response held the gateway's connection,
/// its buffers and the upstream connection serving it forever (200 such clients: +150 MB and
/// 200 upstream sockets). Must hold: after `send_timeout` without progress the client's
/// connection is closed and the upstream connection is released (the upstream sees its
/// response cut), counted as `send_timeout`.
#[test]
fn a_client_that_stops_reading_is_cut_after_send_timeout() {
    let up = Upstream::start();
    // far more than every socket buffer between the upstream and the client can hold
    let big = vec![b'x'; 64 << 20];
    up.set("/public/big", Reply::raw(200, &big, "application/octet-stream"));
    let gw = Gateway::start(
        &up.address(),
        &Cfg {
            server_extra: "send_timeout = \"1s\"\n".into(),
            ..Cfg::default()
        }
        .render(),
        &base_policy(),
        &[],
    );
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /public/big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // never read: the socket buffers fill, then the gateway's writes stall
    closed(&gw, "send_timeout", 1.0);
    wait_for(DEADLINE, "the upstream connection released", || {
        (up.conn_errors() >= 1).then_some(())
    });
    let got = read_to_close(&mut s);
    assert!(got.len() < big.len(), "the whole response arrived after all");
}

/// Fault model: a TLS client that negotiates `h2` and sends no preface (or half of one) was
/// held forever: pingora awaits the h2 handshake without a bound. Must hold: such a
/// connection is closed within `header_timeout` of its accept, counted as `header_timeout`.
#[test]
fn an_h2_connection_without_a_preface_is_closed_at_header_timeout() {
    let site = Site::new();
    let up = Upstream::start();
    let gw = start_tls(&up, &site, "header_timeout = \"1s\"\n");
    let client = site.client(b"h2");
    tls::runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut quiet = tls::tls_connect(gw.addr, client.clone()).await.unwrap();
        assert_eq!(quiet.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut half = tls::tls_connect(gw.addr, client.clone()).await.unwrap();
        half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        for s in [&mut quiet, &mut half] {
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(DEADLINE, async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue, // a SETTINGS frame, then the close
                    }
                }
            })
            .await;
            assert!(read.is_ok(), "the connection was held past the deadline");
        }
    });
    closed(&gw, "header_timeout", 2.0);
}

/// Fault model: an HTTP/2 client with a zero flow-control window held every stream it opened
/// (2.7 MB for 100 unauthenticated streams) and its connection forever. Must hold: a stream
/// whose client accepts no body bytes for `send_timeout` is ended, and once no stream is open
/// for `header_timeout` the connection gets a GOAWAY and is closed (`send_timeout`, `idle`).
#[test]
fn an_h2_client_with_a_zero_window_is_cut_and_its_connection_closed() {
    let site = Site::new();
    let up = Upstream::start();
    up.set(
        "/public/body",
        Reply::raw(200, &[b'y'; 100_000], "application/octet-stream"),
    );
    let gw = start_tls(&up, &site, "send_timeout = \"1s\"\nheader_timeout = \"1s\"\n");
    let client = site.client(b"h2");
    let ended = tls::runtime().block_on(zero_window_client(gw.addr, client, 10));
    assert_eq!(ended, 10, "every stream was ended by the gateway");
    closed(&gw, "send_timeout", 10.0);
    closed(&gw, "idle", 1.0);
}

/// Opens `streams` GETs with a zero initial window and never grants more; waits until the
/// gateway has ended each stream (an error on its body) and then the connection. Returns how
/// many streams ended in an error.
async fn zero_window_client(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>, streams: usize) -> usize {
    let s = tls::tls_connect(addr, config).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(s)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..streams {
        let mut c = client.clone().ready().await.unwrap();
        let req = http::Request::get("https://localhost/public/body").body(()).unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        bodies.push(tokio::spawn(async move {
            let mut body = resp.await?.into_body();
            // nothing is released, so no DATA can come; the stream ends in a reset
            while let Some(chunk) = body.data().await {
                chunk?;
            }
            Ok::<(), h2::Error>(())
        }));
    }
    let mut ended = 0;
    for b in bodies {
        let done = tokio::time::timeout(DEADLINE, b)
            .await
            .expect("a stream was held past the deadline");
        if matches!(done, Ok(Err(_))) {
            ended += 1;
        }
    }
    // the client keeps its side open: the gateway's GOAWAY and close end the connection
    let conn_end = tokio::time::timeout(DEADLINE, driver).await;
    assert!(conn_end.is_ok(), "the connection was held past the deadline");
    drop(client);
    ended
}
