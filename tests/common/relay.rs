//! A TCP relay the test controls, between the gateway and `redis-server`, to inject the
//! faults production has and a clean test does not:
//!
//! - [`Relay::black_hole`]: every connection, open or new, goes silent: bytes are read and
//!   dropped both ways, and no FIN or RST is ever sent (a partition, a dead NAT entry);
//! - [`Relay::heal`]: new connections forward again; the silent ones stay silent, as after a
//!   real partition, so the gateway has to notice and replace them;
//! - [`Relay::black_hole_port`]: one connection goes silent (picked by the port it uses
//!   towards Redis, which `CLIENT LIST` shows as the client's `addr`);
//! - [`Relay::redirect`]: new connections go to another server, open ones stay where they
//!   are (a managed primary endpoint or Sentinel-driven DNS after a failover);
//! - [`Relay::tamper`]: a RESP-aware mode that answers one command with a reply of the
//!   wrong type (a misbehaving proxy or server);
//! - [`Relay::delay`]: a RESP-aware mode that holds one command for a while before the
//!   server sees it (a slow or paused server, a write stuck in a buffer).
//!
//! Threads and blocking sockets only; everything stops when the relay is dropped.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One relayed connection.
struct Link {
    /// The local port of the relay's connection to the server.
    upstream_port: u16,
    silent: Arc<AtomicBool>,
}

struct State {
    target: Mutex<SocketAddr>,
    /// New connections are silent from the start.
    black_hole: AtomicBool,
    /// Command name (upper case) answered with this raw reply instead of the server's.
    tamper: Mutex<Option<(String, Vec<u8>)>>,
    /// Command name (upper case) held this long before it is passed on.
    delay: Mutex<Option<(String, Duration)>>,
    /// Commands being held now, or passed on and not yet answered.
    held: AtomicUsize,
    /// Commands held so far.
    held_total: AtomicUsize,
    links: Mutex<Vec<Link>>,
    stop: AtomicBool,
}

/// A relay on a free 127.0.0.1 port.
pub struct Relay {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Relay {
    /// Starts relaying to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(State {
            target: Mutex::new(target),
            black_hole: AtomicBool::new(false),
            tamper: Mutex::new(None),
            delay: Mutex::new(None),
            held: AtomicUsize::new(0),
            held_total: AtomicUsize::new(0),
            links: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        thread::spawn(move || accept_loop(listener, s));
        Relay { addr, state }
    }

    /// `redis://<relay>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Every open connection and every new one goes silent (no FIN, no RST).
    pub fn black_hole(&self) {
        self.state.black_hole.store(true, Ordering::SeqCst);
        for l in self.state.links.lock().expect("links").iter() {
            l.silent.store(true, Ordering::SeqCst);
        }
    }

    /// New connections forward again; silent ones stay silent.
    pub fn heal(&self) {
        self.state.black_hole.store(false, Ordering::SeqCst);
    }

    /// The connection whose server-side port is `port` goes silent; false when none is.
    pub fn black_hole_port(&self, port: u16) -> bool {
        let links = self.state.links.lock().expect("links");
        let found = links.iter().filter(|l| l.upstream_port == port);
        let mut any = false;
        for l in found {
            l.silent.store(true, Ordering::SeqCst);
            any = true;
        }
        any
    }

    /// New connections go to `target`; open ones keep their server.
    pub fn redirect(&self, target: SocketAddr) {
        *self.state.target.lock().expect("target") = target;
    }

    /// New connections answer `command` with `reply` (raw RESP) instead of the server's
    /// answer; every other command is relayed. A connection that subscribes becomes a plain
    /// pipe.
    pub fn tamper(&self, command: &str, reply: &[u8]) {
        *self.state.tamper.lock().expect("tamper") = Some((command.to_ascii_uppercase(), reply.to_vec()));
    }
}

impl Relay {
    /// New connections hold `command` for `delay` before the server sees it (then pass it
    /// and its reply on); every other command is relayed at once, in order. A connection
    /// that subscribes becomes a plain pipe.
    pub fn delay(&self, command: &str, delay: Duration) {
        *self.state.delay.lock().expect("delay") = Some((command.to_ascii_uppercase(), delay));
    }

    /// How many commands [`Relay::delay`] is holding right now, or has passed on without
    /// their reply back yet (0: every held command has been answered by the server).
    pub fn holding(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// How many commands [`Relay::delay`] has held so far (passed on or not).
    pub fn held_so_far(&self) -> usize {
        self.state.held_total.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let target = *state.target.lock().expect("target");
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    continue; // the client sees the connection close, as with a dead target
                };
                let silent = Arc::new(AtomicBool::new(state.black_hole.load(Ordering::SeqCst)));
                let upstream_port = server.local_addr().map_or(0, |a| a.port());
                state.links.lock().expect("links").push(Link {
                    upstream_port,
                    silent: silent.clone(),
                });
                let tamper = state.tamper.lock().expect("tamper").clone();
                let delay = state.delay.lock().expect("delay").clone();
                match delay {
                    Some((command, by)) => {
                        let st = state.clone();
                        thread::spawn(move || delaying(client, server, &command, by, st));
                    }
                    None => start_link(client, server, silent, tamper, state.clone()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn start_link(
    client: TcpStream,
    server: TcpStream,
    silent: Arc<AtomicBool>,
    tamper: Option<(String, Vec<u8>)>,
    state: Arc<State>,
) {
    for s in [&client, &server] {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        let _ = s.set_nodelay(true);
    }
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    match tamper {
        None => {
            let (st, si) = (state.clone(), silent.clone());
            thread::spawn(move || pipe(client, s2, si, st));
            thread::spawn(move || pipe(server, c2, silent, state));
        }
        Some((command, reply)) => {
            thread::spawn(move || tampering(client, server, c2, s2, &command, &reply, silent, state));
        }
    }
}

/// Copies `from` to `to` until either side closes; while `silent`, reads and drops, and
/// never passes a close on.
fn pipe(mut from: TcpStream, mut to: TcpStream, silent: Arc<AtomicBool>, state: Arc<State>) {
    let mut buf = [0u8; 16 * 1024];
    while !state.stop.load(Ordering::SeqCst) {
        match crate::common::client::read_some(&mut from, &mut buf) {
            Ok(0) => {
                if !silent.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                // a silent link keeps both sockets open until the relay stops
                while silent.load(Ordering::SeqCst) && !state.stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Ok(n) => {
                if !silent.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
    }
}

/// The RESP-aware relay: one command in, the server's reply (or the tampered one) out; a
/// `SUBSCRIBE` turns the link into a plain pipe.
#[allow(clippy::too_many_arguments)]
fn tampering(
    client: TcpStream,
    server: TcpStream,
    mut client_out: TcpStream,
    mut server_out: TcpStream,
    command: &str,
    reply: &[u8],
    silent: Arc<AtomicBool>,
    state: Arc<State>,
) {
    for s in [&client, &server] {
        let _ = s.set_read_timeout(None);
    }
    let mut from_client = BufReader::new(client);
    let mut from_server = BufReader::new(server);
    loop {
        let Ok((raw, name)) = read_command(&mut from_client) else {
            return;
        };
        if server_out.write_all(&raw).is_err() {
            return;
        }
        let Ok(answer) = read_raw_reply(&mut from_server) else {
            return;
        };
        let out = if name == command { reply } else { &answer[..] };
        if client_out.write_all(out).is_err() {
            return;
        }
        if name == "SUBSCRIBE" {
            let (c, s) = (from_client.into_inner(), from_server.into_inner());
            let (st, si) = (state.clone(), silent.clone());
            thread::spawn(move || pipe(c, server_out, si, st));
            pipe(s, client_out, silent, state);
            return;
        }
    }
}

/// The delaying relay: commands in order, `command` held for `by` before it is passed on;
/// a `SUBSCRIBE` turns the link into a plain pipe.
fn delaying(client: TcpStream, server: TcpStream, command: &str, by: Duration, state: Arc<State>) {
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (Ok(mut client_out), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let mut from_client = BufReader::new(client);
    let mut from_server = BufReader::new(server);
    loop {
        let Ok((raw, name)) = read_command(&mut from_client) else {
            return;
        };
        let held = name == command;
        if held {
            state.held.fetch_add(1, Ordering::SeqCst);
            state.held_total.fetch_add(1, Ordering::SeqCst);
            thread::sleep(by);
        }
        let answer = if state.stop.load(Ordering::SeqCst) || server_out.write_all(&raw).is_err() {
            None
        } else {
            read_raw_reply(&mut from_server).ok()
        };
        if held {
            state.held.fetch_sub(1, Ordering::SeqCst);
        }
        let Some(answer) = answer else {
            return;
        };
        // the client may have given up meanwhile: the command reached the server all the same
        let _ = client_out.write_all(&answer);
        if name == "SUBSCRIBE" {
            let (c, s) = (from_client.into_inner(), from_server.into_inner());
            let silent = Arc::new(AtomicBool::new(false));
            let (st, si) = (state.clone(), silent.clone());
            thread::spawn(move || pipe(c, server_out, si, st));
            pipe(s, client_out, silent, state);
            return;
        }
    }
}

/// One RESP command (an array of bulk strings): its raw bytes and its name, upper case.
fn read_command(r: &mut impl BufRead) -> io::Result<(Vec<u8>, String)> {
    let raw = read_raw_reply(r)?;
    let text = String::from_utf8_lossy(&raw);
    // *N \r\n $len \r\n NAME \r\n ...
    let name = text.split("\r\n").nth(2).unwrap_or("").to_ascii_uppercase();
    Ok((raw, name))
}

/// The raw bytes of one complete RESP2 value.
fn read_raw_reply(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad RESP");
    let body = std::str::from_utf8(&line[1..line.len().saturating_sub(2)]).map_err(|_| bad())?;
    match line.first() {
        Some(b'+' | b'-' | b':') => Ok(line),
        Some(b'$') => {
            let n: i64 = body.parse().map_err(|_| bad())?;
            if n >= 0 {
                let mut data = vec![0u8; n as usize + 2];
                r.read_exact(&mut data)?;
                line.extend_from_slice(&data);
            }
            Ok(line)
        }
        Some(b'*') => {
            let n: i64 = body.parse().map_err(|_| bad())?;
            for _ in 0..n.max(0) {
                let item = read_raw_reply(r)?;
                line.extend_from_slice(&item);
            }
            Ok(line)
        }
        _ => Err(bad()),
    }
}
