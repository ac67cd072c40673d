//! Real upstream frameworks for the differentials of docs/reference.md#reading-requests: an
//! Express 4 app (`tests/frameworks/express`, node) and a FastAPI app
//! (`tests/frameworks/fastapi`, uvicorn). Each answers with what the framework handed its
//! handler and lists every request it handled at `GET /__seen`, so a test asserts on what
//! the upstream actually ran, not on what the gateway forwarded.
//!
//! They need `npm ci --prefix tests/frameworks/express` and
//! `pip install -r tests/frameworks/fastapi/requirements.txt` (into the repository's `.venv`):
//! `.ci/run` does both, and the first test that needs one does it itself when it is missing
//! (so `cargo test --release` alone installs them). What cannot be installed (no `node`,
//! no `python3`) fails the test with a message naming it; nothing is skipped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::{free_ports, get, repo_path, wait_for, DEADLINE};

/// A running framework app; stopped on drop (and on its own when this process dies: it
/// exits when its stdin closes).
pub struct Framework {
    pub addr: SocketAddr,
    child: Child,
    _stdin: ChildStdin,
}

impl Framework {
    /// The Express 4 app.
    pub fn express() -> Framework {
        let dir = repo_path("tests/frameworks/express");
        if let Err(e) = EXPRESS.get_or_init(|| install_express(&dir)) {
            panic!("{e}");
        }
        Framework::start("node", &[dir.join("server.js")], "Express (node)")
    }

    /// The FastAPI app, on the Python of `AUTHGATE_TEST_PYTHON`, else the repository's
    /// `.venv` (made when missing).
    pub fn fastapi() -> Framework {
        let python = match FASTAPI.get_or_init(install_fastapi) {
            Ok(p) => p.clone(),
            Err(e) => panic!("{e}"),
        };
        let app = repo_path("tests/frameworks/fastapi/app.py");
        Framework::start(&python.to_string_lossy(), &[app], "FastAPI (uvicorn)")
    }

    fn start(program: &str, args: &[PathBuf], what: &str) -> Framework {
        let port = free_ports(1)[0];
        let mut child = Command::new(program)
            .args(args)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} with {program}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        // the app prints "listening" once bound; anything else first (or EOF) is a failure
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(DEADLINE).unwrap_or_default();
        assert_eq!(line.trim(), "listening", "{what} did not start on port {port}");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // uvicorn says so before its socket is bound: wait until it accepts
        wait_for(DEADLINE, &format!("{what} accepting on {addr}"), || {
            std::net::TcpStream::connect(addr).ok().map(drop)
        });
        Framework {
            addr,
            child,
            _stdin: stdin,
        }
    }

    /// `host:port`, for `[upstream] address`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Every request a handler ran, in order: what the framework handed it.
    pub fn seen(&self) -> Vec<Value> {
        let r = get(self.addr, "/__seen", &[]);
        assert_eq!(r.status, 200, "{r}");
        match r.json() {
            Value::Array(all) => all,
            other => panic!("/__seen answered {other}"),
        }
    }

    /// The app's own OpenAPI document (FastAPI generates it).
    pub fn openapi(&self) -> String {
        let r = get(self.addr, "/openapi.json", &[]);
        assert_eq!(r.status, 200, "{r}");
        r.text()
    }
}

/// Whether Express is installed (once per test run: tests start in parallel).
static EXPRESS: OnceLock<Result<(), String>> = OnceLock::new();
/// The Python that has FastAPI and uvicorn.
static FASTAPI: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// `npm ci` in the app's directory, unless Express is already there.
fn install_express(dir: &Path) -> Result<(), String> {
    if dir.join("node_modules/express").is_dir() {
        return Ok(());
    }
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir),
        "npm ci for the Express test upstream (needs node and npm: apt-get install nodejs npm)",
    )
}

/// A Python with the app's requirements: `AUTHGATE_TEST_PYTHON` as it is, else the
/// repository's `.venv`, made with `python3 -m venv` and filled by pip when it lacks them.
fn install_fastapi() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("AUTHGATE_TEST_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = repo_path(".venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv .venv for the FastAPI test upstream (needs python3 and python3-venv)",
        )?;
    }
    let has = Command::new(&python)
        .args(["-c", "import fastapi, uvicorn"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        let requirements = repo_path("tests/frameworks/fastapi/requirements.txt");
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "-r"])
                .arg(requirements),
            "pip install -r tests/frameworks/fastapi/requirements.txt into .venv",
        )?;
    }
    Ok(python)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed: {s}")),
        Err(e) => Err(format!("{what}: cannot run it: {e}")),
    }
}

impl Drop for Framework {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
