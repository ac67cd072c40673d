//! A real `redis-server` for the scale-out tests: started on a free 127.0.0.1 port without
//! persistence, stopped on drop, and a minimal RESP client to inspect and poke it.
//!
//! A missing `redis-server` fails the test with a message naming the Debian package: the
//! README's test command installs it, and a test never skips silently.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_ports;
use super::{claims, sign_cfg, with, Key};
use super::{run_cli, wait_for, Cfg, CliOutput, Gateway, DEADLINE};

/// A `redis-server` process on 127.0.0.1.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port (`--save '' --appendonly no`) and waits for PING.
    pub fn start() -> RedisServer {
        for _ in 0..3 {
            let port = free_ports(1)[0];
            if let Some(s) = Self::start_on(port) {
                return s;
            }
        }
        panic!("redis-server did not start on a free port three times");
    }

    fn start_on(port: u16) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install Debian's redis-server package \
                     (`apt-get install redis-server`; .ci/run does this)"
                )
            });
        let mut s = RedisServer {
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            child: Some(child),
        };
        for _ in 0..250 {
            if s.try_cmd(&["PING"]).is_ok_and(|r| r == Reply::Status("PONG".into())) {
                return Some(s);
            }
            if let Some(c) = s.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    s.child = None;
                    return None; // port taken after all
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh, empty server on the same port (a restart without persistence).
    pub fn restart(&mut self) {
        self.kill();
        let port = self.addr.port();
        let again = wait_for(DEADLINE, "redis-server restart on its port", || Self::start_on(port));
        *self = again;
    }

    /// One command; panics on a transport error.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?} at {}: {e}", self.addr))
    }

    /// One command on a fresh connection.
    pub fn try_cmd(&self, args: &[&str]) -> io::Result<Reply> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req)?;
        read_reply(&mut BufReader::new(s))
    }

    /// Members of a set (SMEMBERS), sorted.
    pub fn smembers(&self, key: &str) -> Vec<String> {
        let mut v = self.cmd(&["SMEMBERS", key]).strings();
        v.sort();
        v
    }

    /// The ports (as Redis sees the client's address) of the connections subscribed to a
    /// channel.
    pub fn subscriber_ports(&self) -> Vec<u16> {
        self.clients()
            .iter()
            .filter(|c| c.get("sub").is_some_and(|n| n != "0"))
            .filter_map(|c| {
                c.get("addr")
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
            })
            .collect()
    }

    /// `CLIENT LIST`, one map of fields per connection (the asking one included).
    pub fn clients(&self) -> Vec<std::collections::HashMap<String, String>> {
        match self.cmd(&["CLIENT", "LIST"]) {
            Reply::Bulk(Some(list)) => list
                .lines()
                .map(|l| {
                    l.split(' ')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .collect(),
            other => panic!("CLIENT LIST answered {other:?}"),
        }
    }

    /// Keys matching a pattern (KEYS; test data only), sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut v = self.cmd(&["KEYS", pattern]).strings();
        v.sort();
        v
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The strings of an array reply (bulk or status elements).
    pub fn strings(&self) -> Vec<String> {
        match self {
            Reply::Array(items) => items
                .iter()
                .filter_map(|i| match i {
                    Reply::Bulk(Some(s)) | Reply::Status(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            other => panic!("not an array reply: {other:?}"),
        }
    }

    /// The value of an integer reply.
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("not an integer reply: {other:?}"),
        }
    }
}

fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"));
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest.parse().map(Reply::Int).map_err(|_| bad()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned())))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(Reply::Array(items))
        }
        _ => Err(bad()),
    }
}

/// The base config with a 30/min limit on `/tiny`, a partner route without limits or
/// ownership on `/plain` (it needs shared state only for revocations), and `[redis]` at
/// `url` with `extra` lines in it; `instance` names the replica when given.
pub fn redis_config(url: &str, on_error: &str, timeout: &str, extra: &str, instance: Option<&str>) -> String {
    redis_config_on(Cfg::default(), url, on_error, timeout, extra, instance)
}

/// [`redis_config`] on `base` (its own threads, extra server lines, ...).
pub fn redis_config_on(
    base: Cfg,
    url: &str,
    on_error: &str,
    timeout: &str,
    extra: &str,
    instance: Option<&str>,
) -> String {
    let mut server_extra = base.server_extra.clone();
    if let Some(id) = instance {
        server_extra.push_str(&format!("instance_id = \"{id}\"\n"));
    }
    let mut text = Cfg {
        server_extra,
        limits_extra: format!("{}\n[[limits]]\nname = \"tiny\"\nper_minute = 30\n", base.limits_extra),
        routes_extra: format!(
            r#"{}
[[routes]]
name = "tiny"
path = "/tiny"
auth = "partner"
limits = ["tiny"]

[[routes]]
name = "plain"
path = "/plain"
auth = "partner"
"#,
            base.routes_extra
        ),
        ..base
    }
    .render();
    text.push_str(&format!(
        "\n[redis]\nurl = \"{url}\"\nkey_prefix = \"{PREFIX}\"\ntimeout = \"{timeout}\"\non_error = \"{on_error}\"\n{extra}"
    ));
    text
}

/// The `key_prefix` of [`redis_config`].
pub const PREFIX: &str = "e2e:";

/// `text` with the one occurrence of `from` replaced by `to`; panics when `from` is not there
/// exactly once (a config edit that silently missed would test the unedited config).
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} is not in the text exactly once:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// `authgate <command> --config <gw's config> <args>`, run in the gateway's config directory.
pub fn ops(gw: &Gateway, command: &[&str], args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    let cfg = gw.config_path();
    let mut all = command.to_vec();
    all.extend(["--config", cfg.to_str().expect("utf-8 path")]);
    all.extend_from_slice(args);
    run_cli(&gw.conf, &all, stdin, DEADLINE)
}

/// `authgate orgs import --config <gw's config> <args> -`, the org ids on stdin.
pub fn import_orgs(gw: &Gateway, args: &[&str], orgs: &[u8]) -> CliOutput {
    let mut all = args.to_vec();
    all.push("-");
    ops(gw, &["orgs", "import"], &all, Some(orgs))
}

/// `authgate revoke --config <gw's config> --partner <partner> --key-id <key_id> <args>`.
pub fn revoke(gw: &Gateway, partner: &str, key_id: &str, args: &[&str]) -> CliOutput {
    let mut all = vec!["--partner", partner, "--key-id", key_id];
    all.extend_from_slice(args);
    ops(gw, &["revoke"], &all, None)
}

/// Waits until the gateway's `authgate_redis_up` is `up`.
pub fn wait_redis_up(gw: &Gateway, up: f64) {
    gw.wait_metric_where(&format!("authgate_redis_up == {up}"), |m| {
        m.sum("authgate_redis_up", &[]) == up
    });
}

/// A token of `partner` whose key id (`jti`) is `key_id`.
pub fn key_token(partner: &str, key_id: &str) -> String {
    sign_cfg(Key::Hs, &with(claims(partner), &[("jti", serde_json::json!(key_id))]))
}

/// Stores a revocation of each of `partner`'s `keys` in Redis under [`PREFIX`], in one
/// atomic script, as `authgate revoke` would record it, and publishes each when `publish`
/// (the way thousands arrive at once: a leaked batch revoked by a script). Returns the
/// counter after the last.
pub fn store_revocations(redis: &RedisServer, partner: &str, keys: &[String], publish: bool) -> i64 {
    const SCRIPT: &str = r#"
local e = redis.call('GET', KEYS[3])
if not e then e = ARGV[1]; redis.call('SET', KEYS[3], e) end
local n = 0
for i = 5, #ARGV do
  local record = '{"kind":"partner","id":"' .. ARGV[3] .. '","key_id":"' .. ARGV[i] .. '","revoked":true,"at":' .. ARGV[2] .. '}'
  n = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], '["partner","' .. ARGV[3] .. '","' .. ARGV[i] .. '"]', record)
  if ARGV[4] == '1' then
    redis.call('PUBLISH', KEYS[1], '{"epoch":' .. cjson.encode(e) .. ',"seq":' .. string.format('%d', n) .. ',"record":' .. record .. '}')
  end
end
return n
"#;
    let (hash, counter, epoch) = (
        format!("{PREFIX}revocations"),
        format!("{PREFIX}revocations:seq"),
        format!("{PREFIX}epoch"),
    );
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    let mut args: Vec<&str> = vec![
        "EVAL",
        SCRIPT,
        "3",
        &hash,
        &counter,
        &epoch,
        "e2e-seeded-epoch",
        &at,
        partner,
    ];
    args.push(if publish { "1" } else { "0" });
    args.extend(keys.iter().map(String::as_str));
    redis.cmd(&args).int()
}
