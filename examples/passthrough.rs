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

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
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
}

struct Passthrough {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

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
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Passthrough { peer });
    service.add_tcp(&args.listen);
    server.add_service(service);
    eprintln!("passthrough: {} -> {} ({} threads)", args.listen, addr, args.threads);
    server.run_forever()
}
