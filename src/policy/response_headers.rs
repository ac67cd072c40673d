//! What the client receives of an upstream response (docs/reference.md#headers-the-client-gets):
//! hop-by-hop headers stay on the upstream hop, and a protocol switch the gateway did not
//! forward is refused.
//!
//! pingora replaces the response's `Connection` header with its own but passes the headers
//! an upstream names in it, and `Keep-Alive`, `Proxy-Connection` and `Upgrade`: a client (or a
//! cache in front of the gateway) would read connection state that belongs to the
//! gateway-upstream connection. After a `101 Switching Protocols` the connection stops being
//! HTTP: the gateway sees no further requests on it, so a `101` is only honoured for an upgrade
//! it forwarded itself (a `websocket = true` route); elsewhere it is a broken upstream.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderName};

/// `Keep-Alive` (a response header of HTTP/1.0 keep-alive, hop-by-hop).
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (a non-standard `Connection`, hop-by-hop).
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The response headers to remove before the client sees them, `Connection` always (pingora
/// writes its own). `switching`: this is a `101` the gateway accepted, which keeps `Upgrade`
/// (the caller sets `Connection: Upgrade` again) but still loses every header the upstream
/// nominated.
pub(crate) fn hop_by_hop(headers: &HeaderMap, switching: bool) -> Vec<HeaderName> {
    let mut out = Vec::new();
    let mut drop = |name: HeaderName| {
        if headers.contains_key(&name) && !out.contains(&name) {
            out.push(name);
        }
    };
    for value in headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            // a token that is not a header name names nothing the client could get
            let Ok(name) = HeaderName::from_bytes(token) else {
                continue;
            };
            if !(switching && name == UPGRADE) {
                drop(name);
            }
        }
    }
    drop(KEEP_ALIVE);
    drop(PROXY_CONNECTION);
    drop(CONNECTION);
    if !switching {
        drop(UPGRADE);
    }
    out
}

/// Whether an upstream response status switches protocols without the gateway having
/// forwarded an upgrade: such a `101` is answered 502 and its connection closed.
pub(crate) fn switch_refused(status: u16, upgrade_forwarded: bool) -> bool {
    status == 101 && !upgrade_forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn names(v: Vec<HeaderName>) -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(|n| n.as_str().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn nominated_and_standard_hop_by_hop_headers_go() {
        let h = map(&[
            ("Connection", "keep-alive, X-Internal-Token"),
            ("Connection", " x-debug ,,close"),
            ("X-Internal-Token", "secret"),
            ("X-Debug", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"),
            ("Content-Type", "application/json"),
            ("X-Kept", "1"),
        ]);
        assert_eq!(
            names(hop_by_hop(&h, false)),
            [
                "connection",
                "keep-alive",
                "proxy-connection",
                "upgrade",
                "x-debug",
                "x-internal-token"
            ]
        );
        assert!(hop_by_hop(&map(&[("Content-Type", "text/plain")]), false).is_empty());
    }

    #[test]
    fn an_accepted_switch_keeps_its_handshake_headers_only() {
        let h = map(&[
            ("Connection", "Upgrade, X-Internal-Token"),
            ("Upgrade", "websocket"),
            ("X-Internal-Token", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Sec-WebSocket-Accept", "abc"),
        ]);
        assert_eq!(
            names(hop_by_hop(&h, true)),
            ["connection", "keep-alive", "x-internal-token"]
        );
    }

    #[test]
    fn a_switch_is_refused_unless_an_upgrade_was_forwarded() {
        assert!(switch_refused(101, false));
        assert!(!switch_refused(101, true));
        assert!(!switch_refused(200, false));
        assert!(!switch_refused(100, false));
    }
}
