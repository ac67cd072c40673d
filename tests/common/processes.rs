//! Processes and the files they need: the gateway under test ([`Gateway`]), one-shot CLI runs,
//! signals, temp dirs, free ports and the `openssl` CLI.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::{get, request, try_request, Response};
use super::config::{base_policy, standard_files};
use super::metrics::Metrics;
use super::tokens::bearer;
use super::{wait_for, DEADLINE};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// The repository root (the crate's manifest directory).
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A file or directory of the repository, by its path from the root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// The text of a repository file; panics naming it when it cannot be read.
pub fn read_repo(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("authgate-e2e-{label}-{}-{n}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Writes `bytes` to `rel` (parent dirs created).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&p, bytes).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(test failed; removing {})", self.path.display());
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs the `openssl` CLI in `dir` (test certificates and keys); panics naming the Debian
/// package when it is missing, and with openssl's stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}): install Debian's `openssl` package"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` arguments for a new, unencrypted P-256 key (followed by the key's file name).
pub const NEW_P256_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
];

/// A self-signed P-256 certificate valid for 30 days, `key` and `cert` written under `dir`;
/// `extra` goes after the subject (e.g. `-addext` pairs for a CA).
pub fn self_signed_p256(dir: &Path, key: &str, cert: &str, subject: &str, extra: &[&str]) {
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(&NEW_P256_KEY);
    args.extend_from_slice(&[key, "-out", cert, "-days", "30", "-subj", subject]);
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// `n` ports for listeners that a child process binds itself (a gateway, redis-server).
///
/// Fault model: the tests run eight at a time in one process. A port found with a bind to
/// `:0` and then released can be handed by the kernel to the next `bind(:0)` of a test
/// running beside this one (its fake upstream) before the child binds it; that gateway
/// then fails to start, or worse, its readiness probe or a request reaches the other
/// test's server (seen: a token-less request answered 200 by another test's upstream).
/// Must hold: a port is handed out at most once per test run, from below the kernel's
/// ephemeral range, where `bind(:0)` and outgoing connections never land, and only after a
/// bind shows it is free now.
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, span) = (
        ephemeral_low.saturating_sub(12_000).max(1024),
        12_000u64.min(u64::from(ephemeral_low).saturating_sub(1024)),
    );
    assert!(
        span >= 1_000,
        "the ephemeral port range starts at {ephemeral_low}: no room below it for test listeners"
    );
    // concurrent test processes (two checkouts) start at different places
    let _ = NEXT.compare_exchange(
        0,
        u64::from(std::process::id()) * 7919 % span + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let port = low + ((NEXT.fetch_add(1, Ordering::SeqCst) - 1) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "no {n} free ports in {low}..{}", u64::from(low) + span);
    ports
}

/// An address where nothing listens (for "upstream down"): a port bound without `listen`,
/// so every connect is refused, and held until the test binary exits. A port merely freed
/// could be handed to a listener of a test running beside this one (fault: the port is
/// reused; what must hold: "down" stays down for the whole test).
pub fn closed_addr() -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind :0");
    let addr = socket.local_addr().expect("local addr");
    std::mem::forget(socket); // bound, never listening, for the rest of the run
    addr.to_string()
}

/// Output of a finished CLI run.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when it had to be killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `authgate <args>` (cwd = `cwd`), feeding `stdin`, killing it after `timeout`.
pub fn run_cli(cwd: &Path, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CliOutput {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let out_path = std::env::temp_dir().join(format!("authgate-e2e-cli-{}-{n}.out", std::process::id()));
    let err_path = out_path.with_extension("err");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn authgate");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        match pipe.write_all(input) {
            // a command may refuse (an unknown partner, say) and exit before it reads its
            // input: what it said and its exit status are the test's to judge
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.expect("write stdin"),
        }
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    CliOutput { status, stdout, stderr }
}

/// Sends a signal with the `kill` command (`sig` like "HUP", "TERM").
pub fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Writes the standard key files, `policy` as partners.toml and `files` into `<dir>/conf`
/// and makes `<dir>/run` (the working directory); returns the conf path.
fn write_conf_dir(dir: &TempDir, policy: &str, files: &[(&str, &[u8])]) -> PathBuf {
    std::fs::create_dir_all(dir.path.join("run")).expect("run dir");
    for (rel, bytes) in standard_files() {
        dir.write(&format!("conf/{rel}"), &bytes);
    }
    dir.write("conf/partners.toml", policy.as_bytes());
    for (rel, bytes) in files {
        dir.write(&format!("conf/{rel}"), bytes);
    }
    dir.path.join("conf")
}

/// A config directory laid out like a [`Gateway`]'s, for `authgate check` and for starts
/// that must fail: nothing is kept running. The placeholders `{listen}`, `{admin}` and
/// `{upstream}` are filled with ports that were free, in case a bad config were (wrongly)
/// started.
pub struct ConfDir {
    pub dir: TempDir,
    /// `<dir>/conf/authgate.toml`.
    pub config: PathBuf,
}

impl ConfDir {
    pub fn new(label: &str, config: &str, policy: &str, files: &[(&str, &[u8])]) -> ConfDir {
        let dir = TempDir::new(label);
        let conf = write_conf_dir(&dir, policy, files);
        let ports = free_ports(3);
        let config_text = config
            .replace("{listen}", &format!("127.0.0.1:{}", ports[0]))
            .replace("{admin}", &format!("127.0.0.1:{}", ports[1]))
            .replace("{upstream}", &format!("127.0.0.1:{}", ports[2]));
        let config = conf.join("authgate.toml");
        std::fs::write(&config, config_text).expect("write config");
        ConfDir { dir, config }
    }

    /// `config` with the base policy and no extra files.
    pub fn base_policy(label: &str, config: &str) -> ConfDir {
        ConfDir::new(label, config, &base_policy(), &[])
    }

    /// `authgate check --config <config>`, run from `<dir>/run`.
    pub fn check(&self) -> CliOutput {
        let config = self.config.to_string_lossy();
        run_cli(
            &self.dir.path.join("run"),
            &["check", "--config", &config],
            None,
            DEADLINE,
        )
    }

    /// `authgate --config <config>`, which must refuse to start: asserts that it exited by
    /// itself, not with 0, and returns what it said.
    pub fn start_refused(&self, what: &str) -> CliOutput {
        let config = self.config.to_string_lossy();
        let run = run_cli(&self.dir.path.join("run"), &["--config", &config], None, DEADLINE);
        assert!(
            run.status.is_some(),
            "authgate kept running with {what}:\n{}",
            run.all()
        );
        assert_ne!(run.code(), Some(0), "authgate exited 0 with {what}:\n{}", run.all());
        run
    }
}

/// The 1-based number of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
}

/// Options for [`Gateway::start_with`].
#[derive(Clone, Debug)]
pub struct StartOpts {
    /// Wait for `/readyz` == 200 (else only `/healthz`).
    pub wait_ready: bool,
}

impl Default for StartOpts {
    fn default() -> Self {
        StartOpts { wait_ready: true }
    }
}

/// A running `authgate --config <dir>/conf/authgate.toml`, started from `<dir>/run`.
pub struct Gateway {
    pub dir: TempDir,
    /// Where authgate.toml, partners.toml and the key files live.
    pub conf: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    template: String,
    upstream: String,
    opts: StartOpts,
    child: Option<Child>,
    log: PathBuf,
    /// Copies the gateway's output into `log` (a pipe, not the file itself: a file-size
    /// limit set on the gateway to fake a full disk must not cut its log).
    log_copier: Option<std::thread::JoinHandle<()>>,
    starts: usize,
}

impl Gateway {
    /// Writes the config (placeholders filled), `policy` as partners.toml, the standard key
    /// files and `files` into a fresh dir, starts the gateway and waits until it is ready.
    pub fn start(upstream: &str, config: &str, policy: &str, files: &[(&str, &[u8])]) -> Gateway {
        Self::start_with(upstream, config, policy, files, StartOpts::default())
    }

    pub fn start_with(upstream: &str, config: &str, policy: &str, files: &[(&str, &[u8])], opts: StartOpts) -> Gateway {
        let dir = TempDir::new("gw");
        let conf = write_conf_dir(&dir, policy, files);
        let log = dir.path.join("gateway.log");
        let mut gw = Gateway {
            dir,
            conf,
            addr: "127.0.0.1:1".parse().expect("addr"),
            admin: "127.0.0.1:1".parse().expect("addr"),
            template: config.to_string(),
            upstream: upstream.to_string(),
            opts,
            child: None,
            log,
            log_copier: None,
            starts: 0,
        };
        gw.launch();
        gw
    }

    fn launch(&mut self) {
        for attempt in 1..=3 {
            let ports = free_ports(2);
            self.addr = format!("127.0.0.1:{}", ports[0]).parse().expect("addr");
            self.admin = format!("127.0.0.1:{}", ports[1]).parse().expect("addr");
            let config = self
                .template
                .replace("{listen}", &self.addr.to_string())
                .replace("{admin}", &self.admin.to_string())
                .replace("{upstream}", &self.upstream);
            std::fs::write(self.config_path(), config).expect("write config");
            self.starts += 1;
            {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("log");
                let _ = writeln!(f, "----- e2e: start #{} (attempt {attempt}) -----", self.starts);
            }
            let (reader, writer) = std::io::pipe().expect("log pipe");
            let mut child = Command::new(BIN)
                .arg("--config")
                .arg(self.config_path())
                .current_dir(self.dir.path.join("run"))
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(writer.try_clone().expect("log pipe clone"))
                .stderr(writer)
                .spawn()
                .expect("spawn authgate");
            let _ = child.stdin.take();
            self.join_log_copier();
            self.log_copier = Some(copy_log(reader, &self.log));
            self.child = Some(child);
            match self.wait_started() {
                Ok(()) => return,
                Err(exit) => {
                    let text = self.log_text();
                    let in_use = text.to_ascii_lowercase().contains("in use");
                    if in_use && attempt < 3 {
                        continue;
                    }
                    panic!("authgate did not start ({exit}); log:\n{}", tail(&text, 80));
                }
            }
        }
    }

    fn wait_started(&mut self) -> Result<(), String> {
        let path = if self.opts.wait_ready { "/readyz" } else { "/healthz" };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("exited with {st}"));
            }
            if let Ok(r) = try_request(self.admin, "GET", path, &[], None) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("{path} not 200 within {DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.conf.join("authgate.toml")
    }

    /// Writes a file into the config dir.
    pub fn write(&self, rel: &str, bytes: &[u8]) {
        self.dir.write(&format!("conf/{rel}"), bytes);
    }

    pub fn write_policy(&self, policy: &str) {
        self.write("partners.toml", policy.as_bytes());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway not running").id()
    }

    /// Freezes the process (SIGSTOP), as a paused container or a frozen VM.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Resumes a frozen process (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Limits the size of any file the running gateway writes (RLIMIT_FSIZE's soft limit,
    /// with `prlimit`): a write past it fails as on a full disk. `None` lifts it. Its log is
    /// a pipe, so the limit does not reach it.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let limit = bytes.map_or("unlimited".to_string(), |b| b.to_string());
        let st = Command::new("prlimit")
            .args(["--pid", &self.pid().to_string(), &format!("--fsize={limit}:")])
            .status()
            .expect("run prlimit (util-linux)");
        assert!(st.success(), "prlimit --fsize={limit} on {} failed", self.pid());
    }

    /// Waits until the copier has written everything the exited process said.
    fn join_log_copier(&mut self) {
        if let Some(copier) = self.log_copier.take() {
            let _ = copier.join();
        }
    }

    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> Metrics {
        let r = get(self.admin, "/metrics", &[]);
        assert_eq!(r.status, 200, "/metrics: {r}");
        Metrics::parse(&r.text())
    }

    pub fn reloads(&self, result: &str) -> f64 {
        self.metrics()
            .sum("authgate_config_reloads_total", &[("result", result)])
    }

    /// Waits until the metric sum reaches at least `at_least`.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        wait_for(DEADLINE, &format!("{name}{labels:?} >= {at_least}"), || {
            let v = self.metrics().sum(name, labels);
            (v >= at_least).then_some(v)
        })
    }

    /// Waits until `authgate_denied_total{route, reason}` reaches at least `at_least`.
    pub fn wait_denied(&self, route: &str, reason: &str, at_least: f64) -> f64 {
        self.wait_metric(
            "authgate_denied_total",
            &[("route", route), ("reason", reason)],
            at_least,
        )
    }

    /// Waits until `authgate_requests_total{route, method, status}` reaches at least
    /// `at_least`.
    pub fn wait_requests(&self, route: &str, method: &str, status: &str, at_least: f64) -> f64 {
        let labels = [("route", route), ("method", method), ("status", status)];
        self.wait_metric("authgate_requests_total", &labels, at_least)
    }

    /// Waits until the parsed metrics satisfy `pred`; returns them.
    pub fn wait_metric_where(&self, what: &str, mut pred: impl FnMut(&Metrics) -> bool) -> Metrics {
        wait_for(DEADLINE, what, || {
            let m = self.metrics();
            pred(&m).then_some(m)
        })
    }

    /// SIGHUP, then waits until `authgate_config_reloads_total{result}` grew.
    pub fn reload_expect(&self, result: &str) {
        let before = self.reloads(result);
        self.signal("HUP");
        self.wait_metric("authgate_config_reloads_total", &[("result", result)], before + 1.0);
    }

    /// SIGHUP and wait for a successful reload.
    pub fn reload(&self) {
        self.reload_expect("success");
    }

    pub fn req(
        &self,
        method: &str,
        target: impl AsRef<[u8]>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        request(self.addr, method, target, headers, body)
    }

    pub fn get(&self, target: impl AsRef<[u8]>, headers: &[(&str, &str)]) -> Response {
        get(self.addr, target, headers)
    }

    /// GET with `Authorization: Bearer <token>` plus `headers`.
    pub fn get_auth(&self, target: impl AsRef<[u8]>, token: &str, headers: &[(&str, &str)]) -> Response {
        let auth = bearer(token);
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(headers);
        get(self.addr, target, &h)
    }

    /// Polls the process for an exit until `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.join_log_copier();
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.join_log_copier();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status when it exited
    /// by itself.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = self.child.as_ref()?.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let st = self.wait_exit(grace);
        if st.is_none() {
            self.kill();
        }
        st
    }

    /// Stops the gateway and starts it again on new ports with the same files.
    pub fn restart(&mut self) {
        let st = self.stop(Duration::from_secs(30));
        assert!(st.is_some(), "gateway did not exit on SIGTERM before restart");
        self.launch();
    }

    /// Starts a stopped gateway again on new ports with the same files, waiting as `opts` say.
    pub fn start_again(&mut self, opts: StartOpts) {
        assert!(self.child.is_none(), "start_again on a running gateway");
        self.opts = opts;
        self.launch();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- authgate log ({}), last lines -----\n{}\n----- end of log -----",
                self.log.display(),
                tail(&self.log_text(), 60)
            );
        }
        self.stop(Duration::from_secs(5));
    }
}

/// Copies everything `from` yields into the file at `log` (appending), until EOF.
fn copy_log(mut from: std::io::PipeReader, log: &Path) -> std::thread::JoinHandle<()> {
    let mut to = std::fs::OpenOptions::new().append(true).open(log).expect("log file");
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
