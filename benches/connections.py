#!/usr/bin/env python3
"""Clients that try to hold the gateway, measured (docs/reference.md#server; figures in
benches/RESULTS.md#connections).

Starts the release binary with [server.tls] (HTTP/1.1 and h2 by ALPN, a self-signed
certificate made with openssl) and short deadlines, an in-process upstream that answers 2 MB,
then runs each scenario in turn:

  h2-preface     N TLS connections that negotiate h2 and send no preface (header_timeout)
  h2-zero-window N h2 connections with a zero initial window, each opening 100 streams
                 (send_timeout ends the streams, then the idle GOAWAY the connection)
  unread         N clients asking for a 2 MB response and never reading it (send_timeout)
  admin-pipeline N connections pipelining GET /metrics to the admin listener and never
                 reading; meanwhile `authgate health` must answer within 1 s (eviction)
  big-heads      N connections sending 1 MB of request head that never ends (max_head_bytes)

For each: the gateway's open descriptors and RSS before, at the peak and after; how long each
connection lived against its deadline. Exits 1 if a connection outlived its deadline + 2 s, RSS
did not come back within 20 MB of idle, or `authgate health` failed or took 1 s or more. Not a
test (it takes a minute and wants a quiet machine): run it by hand.

    cargo build --release
    python3 benches/connections.py                    # the issue's sizes
    python3 benches/connections.py --only unread,big-heads --scale 0.25
"""

import argparse
import asyncio
import http.server
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

BIG = b"x" * (2 << 20)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Big(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BIG)))
        self.end_headers()
        try:
            self.wfile.write(BIG)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def start_upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Big)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def make_cert(tmp):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "site.key", "-out", "site.pem", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:FALSE"],
        cwd=tmp, check=True, capture_output=True)


def write_config(tmp, listen, admin, upstream, deadline):
    with open(os.path.join(tmp, "partners.toml"), "w") as f:
        f.write("")
    path = os.path.join(tmp, "authgate.toml")
    with open(path, "w") as f:
        f.write(f"""[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
access_log = false
log_level = "warn"
header_timeout = "{deadline}s"
send_timeout = "{deadline}s"
body_timeout = "{deadline}s"
admin_max_connections = 64

[server.tls]
cert_file = "site.pem"
key_file = "site.key"

[upstream]
address = "{upstream}"

[policies]
file = "partners.toml"

[[routes]]
name = "public"
path = "/**"
auth = "none"
""")
    return path


class Gateway:
    def __init__(self, binary, config):
        self.config = config
        self.proc = subprocess.Popen([binary, "--config", config], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def status(self):
        fds = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        with open(f"/proc/{self.proc.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        return fds, rss / 1024.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def lifetime(reader):
    """Reads (and drops) whatever comes until the gateway closes; seconds it took."""
    start = time.monotonic()
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return time.monotonic() - start


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def literal(name, value):
    """HPACK literal header field without indexing, new name (no Huffman)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


async def h2_preface(addr, n, ctx):
    async def one():
        reader, writer = await asyncio.open_connection(*addr, ssl=ctx, server_hostname="localhost")
        return await lifetime(reader), writer
    return await asyncio.gather(*(one() for _ in range(n)))


async def h2_zero_window(addr, n, ctx):
    async def one():
        reader, writer = await asyncio.open_connection(*addr, ssl=ctx, server_hostname="localhost")
        settings = (0x4).to_bytes(2, "big") + (0).to_bytes(4, "big")  # INITIAL_WINDOW_SIZE = 0
        out = PREFACE + frame(0x4, 0, 0, settings)
        for i in range(100):
            block = (literal(":method", "GET") + literal(":scheme", "https") +
                     literal(":path", f"/big/{i}") + literal(":authority", "localhost"))
            out += frame(0x1, 0x5, 2 * i + 1, block)  # HEADERS, END_STREAM | END_HEADERS
        writer.write(out)
        await writer.drain()
        return await lifetime(reader), writer
    return await asyncio.gather(*(one() for _ in range(n)))


async def unread(addr, n):
    async def one():
        reader, writer = await asyncio.open_connection(*addr)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        # never read: wait for the gateway to give up, then see it closed
        start = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            if sock.fileno() < 0:
                break
            try:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                break
            if err or data == b"":
                break
            # bytes are waiting: the gateway may still be there; look for its close under them
            tcp_info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
            if tcp_info[0] in (8, 7, 11):  # CLOSE_WAIT, CLOSE, LAST_ACK: the peer closed
                break
        return time.monotonic() - start, writer
    return await asyncio.gather(*(one() for _ in range(n)))


async def admin_pipeline(admin, n, binary, config):
    async def one():
        reader, writer = await asyncio.open_connection(*admin)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(2000):
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            await asyncio.wait_for(writer.drain(), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        return writer
    writers = await asyncio.gather(*(one() for _ in range(n)))
    probes = []
    for _ in range(5):
        start = time.monotonic()
        rc = await (await asyncio.create_subprocess_exec(binary, "health", "--config", config,
                                                         stdout=asyncio.subprocess.DEVNULL,
                                                         stderr=asyncio.subprocess.DEVNULL)).wait()
        probes.append((rc, time.monotonic() - start))
        await asyncio.sleep(0.2)
    return probes, writers


async def big_heads(addr, n):
    async def one():
        reader, writer = await asyncio.open_connection(*addr, ssl=None)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        line = b"X-Pad: " + b"y" * 1000 + b"\r\n"
        try:
            for _ in range(1000):
                writer.write(line)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        answer = await reader.read(200)
        await lifetime(reader)
        return time.monotonic() - start, answer, writer
    return await asyncio.gather(*(one() for _ in range(n)))


async def sampled(gw, work):
    """Runs `work`, sampling the gateway's descriptors and RSS; the result and the peak."""
    peak = [0, 0.0]
    done = asyncio.Event()

    async def sample():
        while not done.is_set():
            fds, rss = gw.status()
            peak[0], peak[1] = max(peak[0], fds), max(peak[1], rss)
            await asyncio.sleep(0.1)
    sampler = asyncio.create_task(sample())
    result = await work
    done.set()
    await sampler
    return result, peak


async def run(args):
    tmp = tempfile.mkdtemp(prefix="authgate-conns-")
    make_cert(tmp)
    upstream = start_upstream()
    listen, admin = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
    config = write_config(tmp, f"{listen[0]}:{listen[1]}", f"{admin[0]}:{admin[1]}",
                          f"127.0.0.1:{upstream.server_address[1]}", args.deadline)
    gw = Gateway(args.binary, config)
    failures = []
    try:
        for _ in range(100):
            try:
                socket.create_connection(listen, 0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        ctx = tls_context()
        size = lambda n: max(1, int(n * args.scale))
        scenarios = {
            "h2-preface": lambda: h2_preface(listen, size(500), ctx),
            "h2-zero-window": lambda: h2_zero_window(listen, size(50), ctx),
            "unread": lambda: unread_plain(listen, size(200)),
            "admin-pipeline": lambda: admin_pipeline(admin, 64, args.binary, config),
            "big-heads": lambda: big_heads_tls(listen, size(200), ctx),
        }
        for name, make in scenarios.items():
            if args.only and name not in args.only:
                continue
            idle = gw.status()
            result, peak = await sampled(gw, make())
            await asyncio.sleep(2)
            after = gw.status()
            failures += report(name, result, idle, peak, after, args.deadline)
    finally:
        gw.stop()
        upstream.shutdown()
    print("PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


async def unread_plain(addr, n):
    # the proxy listener speaks TLS here: the clients that never read do so over TLS
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    async def one():
        reader, writer = await asyncio.open_connection(*addr, ssl=ctx, server_hostname="localhost")
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        start = time.monotonic()
        # read nothing until the gateway has had send_timeout to give up, then drain: what
        # comes is what was buffered before it cut the connection
        await asyncio.sleep(float(ARGS.deadline) + 2)
        got = 0
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
                if not chunk:
                    break
                got += len(chunk)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass
        return time.monotonic() - start, got, writer
    return await asyncio.gather(*(one() for _ in range(n)))


async def big_heads_tls(addr, n, ctx):
    plain = ssl.create_default_context()
    plain.check_hostname = False
    plain.verify_mode = ssl.CERT_NONE

    async def one():
        reader, writer = await asyncio.open_connection(*addr, ssl=plain, server_hostname="localhost")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        line = b"X-Pad: " + b"y" * 1000 + b"\r\n"
        try:
            for _ in range(1000):
                writer.write(line)
                await asyncio.wait_for(writer.drain(), 5)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        try:
            answer = await asyncio.wait_for(reader.read(200), 10)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
            answer = b""
        return time.monotonic() - start, answer, writer
    return await asyncio.gather(*(one() for _ in range(n)))


def report(name, result, idle, peak, after, deadline):
    failures = []
    limit = float(deadline) + 2
    print(f"\n{name}")
    print(f"  descriptors idle / peak / after: {idle[0]} / {peak[0]} / {after[0]}")
    print(f"  RSS MB      idle / peak / after: {idle[1]:.1f} / {peak[1]:.1f} / {after[1]:.1f}")
    if after[1] > idle[1] + 20:
        failures.append(f"{name}: RSS {after[1]:.1f} MB after, {idle[1]:.1f} MB idle")
    if name == "admin-pipeline":
        probes, _ = result
        worst = max(t for _, t in probes)
        print(f"  authgate health: {[rc for rc, _ in probes]} (exit codes), slowest {worst:.2f} s")
        if any(rc != 0 for rc, _ in probes) or worst >= 1:
            failures.append(f"{name}: authgate health {probes}")
        return failures
    lives = sorted(r[0] for r in result)
    print(f"  connections: {len(lives)}, lifetime median {lives[len(lives) // 2]:.2f} s, max {lives[-1]:.2f} s"
          f" (deadline {deadline} s)")
    if name == "unread":
        # lifetimes here include the client's own wait; what matters is the bytes it got
        got = sorted(r[1] for r in result)
        print(f"  bytes each client got of {len(BIG)}: max {got[-1]}")
        if got[-1] >= len(BIG):
            failures.append(f"{name}: a client got the whole response")
        return failures
    if name == "big-heads":
        answered = sum(1 for r in result if r[1].startswith(b"HTTP/1.1 431"))
        print(f"  answered 431: {answered} / {len(result)}")
        if answered < len(result):
            failures.append(f"{name}: {len(result) - answered} not answered 431")
        return failures
    if lives[-1] > limit:
        failures.append(f"{name}: a connection lived {lives[-1]:.2f} s (limit {limit} s)")
    return failures


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/release/authgate")
    p.add_argument("--deadline", default="3", help="header/send/body timeout, seconds")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the connection counts")
    p.add_argument("--only", type=lambda s: s.split(","), default=None)
    ARGS = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(asyncio.run(run(ARGS)))


if __name__ == "__main__":
    main()
