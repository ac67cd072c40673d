//! A bare pingora 0.9 pass-through proxy: every request goes to one upstream, no checks.
//!
//! `benches/load.sh` uses it as the physical limit authgate is compared with: the same
//! pingora version, server settings (`threads`, `work_stealing = false`, upstream keep-alive
//! pool) and allocator (jemalloc) as authgate, minus everything authgate does per request.
//!
//! ```text
//! cargo build --release --example passthrough
//! target/release/examples/passthrough --listen 127.0.0.1:8081 --upstream 127.0.0.1:3000 --threads 1
//! ```
//!
//! With `--deny` it answers every request itself with the same 401 JSON refusal (status,
//! headers, body size) authgate sends for a bad signature, from `request_filter`: the floor
//! of what pingora costs per refusal, for the bad-signature flood rows.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Forward every request to one upstream, unchanged.
#[derive(Parser)]
#[command(name = "passthrough")]
struct Args {
    /// Address to listen on (host:port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// Upstream address (host:port), plain HTTP.
    #[arg(long)]
    upstream: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Answer every request 401 (authgate's refusal of a bad signature) instead of proxying.
    #[arg(long)]
    deny: bool,
}

struct Passthrough {
    peer: HttpPeer,
    deny: bool,
}

/// The size of authgate's `invalid_token` body with a request id; the content does not matter.
const DENY_BODY: &str = r#"{"error":"invalid_token","message":"The bearer token's signature does not verify.","request_id":"0123456789abcdef0123456789abcdef"}"#;

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<bool> {
        if !self.deny {
            return Ok(false);
        }
        let mut h = ResponseHeader::build(401, Some(5))?;
        h.insert_header("Content-Type", "application/json")?;
        h.insert_header("Content-Length", DENY_BODY.len().to_string())?;
        h.insert_header("Cache-Control", "no-store")?;
        h.insert_header("X-Request-Id", "0123456789abcdef0123456789abcdef")?;
        h.insert_header("WWW-Authenticate", r#"Bearer error="invalid_token""#)?;
        session.write_response_header(Box::new(h), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(DENY_BODY.as_bytes())), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr: SocketAddr = args
        .upstream
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("upstream {} does not resolve", args.upstream))?;
    // The same peer options authgate sets for a plain-HTTP upstream.
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.total_connection_timeout = Some(Duration::from_secs(2));
    peer.options.read_timeout = Some(Duration::from_secs(30));
    peer.options.idle_timeout = Some(Duration::from_secs(60));

    let conf = ServerConf {
        threads: args.threads,
        work_stealing: false,
        upstream_keepalive_pool_size: 256,
        // SIGTERM: exit within about 2 s (pingora's default grace period is 5 minutes).
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Passthrough { peer, deny: args.deny });
    service.add_tcp(&args.listen);
    server.add_service(service);
    eprintln!("passthrough: {} -> {} ({} threads)", args.listen, addr, args.threads);
    server.run_forever()
}
