//! Starting and stopping the gateway: the pingora proxy service, a background runtime for
//! the admin listener and housekeeping, and our own signal handling (SIGHUP reloads;
//! SIGTERM and SIGINT drain gracefully; pingora's default would kill on SIGHUP and drop
//! requests on SIGINT).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::{Loaded, Settings};
use crate::gateway::Gateway;
use crate::proxy::clusters::Clusters;
use crate::proxy::AuthProxy;

/// How long the proxy listener may take to accept its first connection.
const LISTENER_STARTUP_LIMIT: Duration = Duration::from_secs(30);

static STARTED: AtomicBool = AtomicBool::new(false);

/// Runs the gateway until SIGTERM/SIGINT. Returns only on a startup error.
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let Loaded { settings, policy } = loaded;
    install_panic_hook();
    let gw = Gateway::new(settings, policy)?;
    let s = gw.settings().clone();
    let admin = bind_listeners(&s)?;
    let (clusters, health_checks) = Clusters::build(&s, gw.metrics())?;
    let proxy = AuthProxy::new(gw.clone(), clusters);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (phase_tx, phase_rx) = std::sync::mpsc::channel::<()>();
    start_background(gw.clone(), admin, stop_tx, phase_rx)?;

    let mut server = pingora_server(&s);
    // header_timeout: a total deadline per request head (pingora only bounds each read)
    let mut service = crate::proxy::head_deadline::service(
        &server.configuration,
        proxy,
        s.deadlines,
        gw.metrics().connections_closed(),
    );
    match gw.tls() {
        // HTTP/1.1 and h2 by ALPN; certificate and client CA swappable by SIGHUP.
        Some(tls) => service.add_tls_with_settings(&s.listen.to_string(), None, tls.listener_settings()?),
        None => service.add_tcp(&s.listen.to_string()),
    }
    server.add_service(service);
    // One pingora background service per cluster with a health check.
    server.add_services(health_checks);
    watch_shutdown_phase(&server, phase_tx)?;

    log_start(&s, gw.tls().is_some());
    server.run(RunArgs {
        shutdown_signal: Box::new(StopWatch(stop_rx)),
    });
    tracing::info!("authgate stopped");
    crate::logging::flush();
    Ok(())
}

/// Binds the admin listener (kept) and checks that `listen` is free (pingora binds it
/// itself): an address already taken fails here, with a clear message.
fn bind_listeners(s: &Settings) -> anyhow::Result<std::net::TcpListener> {
    let admin = std::net::TcpListener::bind(s.admin_listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on admin_listen {}: {e}", s.admin_listen))?;
    admin.set_nonblocking(true)?;
    drop(
        std::net::TcpListener::bind(s.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on listen {}: {e}", s.listen))?,
    );
    Ok(admin)
}

/// Starts the `authgate-admin` thread (admin listener, signals, housekeeping: see
/// [`background`]) and waits until its runtime and signal handlers are in place.
fn start_background(
    gw: Arc<Gateway>,
    admin: std::net::TcpListener,
    stop_tx: watch::Sender<bool>,
    phase_rx: std::sync::mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("authgate-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(background(gw, admin, stop_tx, phase_rx, ready_tx));
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("background runtime did not start"))?
}

/// pingora's server: `[server] threads` without work stealing, and shutdown timing derived
/// from `shutdown_grace` (PINGORA.md: pingora sleeps its grace period unconditionally).
fn pingora_server(s: &Settings) -> Server {
    let grace = s.shutdown_grace;
    let conf = ServerConf {
        threads: s.threads,
        work_stealing: false,
        grace_period_seconds: Some(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// Tells the drain watcher (over `phase_tx`) when pingora enters its graceful-shutdown
/// phase, i.e. has stopped accepting (the `authgate-phase` thread).
fn watch_shutdown_phase(server: &Server, phase_tx: std::sync::mpsc::Sender<()>) -> anyhow::Result<()> {
    let mut phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("authgate-phase".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    let _ = phase_tx.send(());
                    return;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        })?;
    Ok(())
}

/// The start line: listeners, clusters with their backends, threads.
fn log_start(s: &Settings, tls: bool) {
    let upstreams: Vec<String> = s
        .upstreams
        .iter()
        .map(|c| {
            let backends: Vec<&str> = c.backends.iter().map(|b| b.address.as_str()).collect();
            format!("{}={}", c.name, backends.join(","))
        })
        .collect();
    tracing::info!(listen = %s.listen, tls, admin = %s.admin_listen, upstreams = %upstreams.join(" "), threads = s.threads, "authgate starting");
}

/// Turns our stop channel into pingora's graceful terminate.
struct StopWatch(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::GracefulTerminate
    }
}

async fn background(
    gw: Arc<Gateway>,
    admin: std::net::TcpListener,
    stop_tx: watch::Sender<bool>,
    phase_rx: std::sync::mpsc::Receiver<()>,
    ready_tx: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let setup = (|| -> anyhow::Result<_> {
        let hup = signal(SignalKind::hangup())?;
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        // A write past RLIMIT_FSIZE must fail with EFBIG (a state file's full disk, handled
        // and retried), not kill the process with SIGXFSZ's default action.
        let xfsz = signal(SignalKind::from_raw(libc::SIGXFSZ))?;
        let admin = tokio::net::TcpListener::from_std(admin)?;
        Ok((hup, term, int, xfsz, admin))
    })();
    let (mut hup, mut term, mut int, _xfsz, admin) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready_tx.send(Err(e));
            return;
        }
    };
    let _ = ready_tx.send(Ok(()));

    tokio::spawn(crate::admin::serve(admin, gw.clone()));
    tokio::spawn(wait_for_listener(gw.clone()));
    tokio::spawn(prune_limits(gw.clone()));
    if let Some(j) = gw.settings().jwks.clone() {
        if let Some(url) = j.url.clone() {
            tokio::spawn(crate::jwks_fetch::refresh_loop(gw.clone(), url, j.refresh));
        }
    }

    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = gw.reload();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(in_flight = gw.in_flight(), "shutdown signal: draining");
    gw.set_draining();
    let _ = stop_tx.send(true);
    let grace = gw.settings().shutdown_grace;
    // Exit as soon as pingora has stopped accepting and in-flight requests reach zero;
    // pingora itself ends the process after the grace period otherwise.
    let gw2 = gw.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + grace;
        if phase_rx.recv_timeout(grace).is_err() {
            return;
        }
        while Instant::now() < deadline {
            if gw2.in_flight() == 0 {
                tracing::info!("drained; exiting");
                crate::logging::exit(0);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(
            in_flight = gw2.in_flight(),
            "shutdown_grace passed with requests in flight"
        );
    });
    // Keep serving /metrics and SIGHUP while draining.
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = gw.reload(); }
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// Marks the gateway ready once the proxy listener accepts connections.
async fn wait_for_listener(gw: Arc<Gateway>) {
    let addr = connectable(gw.settings().listen);
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            gw.set_listener_up();
            STARTED.store(true, Ordering::Release);
            tracing::info!(listen = %gw.settings().listen, "proxy listener is up");
            return;
        }
        if started.elapsed() > LISTENER_STARTUP_LIMIT {
            tracing::error!(listen = %gw.settings().listen, "proxy listener never came up");
            crate::logging::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

async fn prune_limits(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        gw.prune_limits();
    }
}

/// A panic before the gateway is up (a failed bind inside pingora) must not leave a
/// half-started process behind: exit non-zero. Later panics are logged.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panic: {info}");
        default(info);
        if !STARTED.load(Ordering::Acquire) {
            crate::logging::exit(1);
        }
    }));
}
