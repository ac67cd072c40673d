#!/usr/bin/env python3
"""Slowloris against both authgate listeners, measured (docs/security.md, Deadlines; figures in benches/RESULTS.md).

Starts the release binary with a small config (an in-process upstream answers 200), then
opens N connections to the proxy listener and N to the admin listener, each sending an
incomplete request head and then one more byte every second, and meanwhile:

  * every 0.5 s a prompt client (curl, a separate process) asks GET /health on the proxy and
    GET /healthz on the admin listener: status and latency;
  * each trickling connection's lifetime (connect to close by the gateway) is recorded;
  * the gateway's open file descriptors are sampled from /proc/<pid>/fd.

Prints a summary; exits 1 if a prompt request failed or took 1 s or more, if a trickling
connection outlived header_timeout + 2 s, or if the descriptors did not return to the idle
count. Not a test (it takes ~20 s and wants a quiet machine): run it by hand.

    cargo build --release
    python3 benches/slowloris.py                       # 2000 per listener, header_timeout 10s
    python3 benches/slowloris.py --conns 500 --header-timeout 3s
    python3 benches/slowloris.py --legacy --binary /path/to/older/authgate   # a baseline
"""

import argparse
import asyncio
import http.server
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

HEAD = b"GET / HTTP/1.1\r\nHost: slowloris\r\nX-Slow: "


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def start_upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_config(tmp, listen, admin, upstream, header_timeout, admin_max, legacy):
    with open(os.path.join(tmp, "partners.toml"), "w") as f:
        f.write("")
    path = os.path.join(tmp, "authgate.toml")
    deadlines = "" if legacy else f'header_timeout = "{header_timeout}"\nadmin_max_connections = {admin_max}\n'
    with open(path, "w") as f:
        f.write(
            f"""[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
access_log = false
log_level = "warn"
{deadlines}
[upstream]
address = "{upstream}"

[policies]
file = "partners.toml"

[[routes]]
name = "health"
path = "/health"
auth = "none"
"""
        )
    return path


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def curl(url):
    """(status, seconds) of one GET on a fresh connection, timed by curl itself."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code} %{time_total}", url],
        capture_output=True,
        text=True,
    ).stdout.split()
    if len(out) != 2:
        return 0, 5.0
    return int(out[0]), float(out[1])


async def trickle(port, give_up):
    """One slow client: lifetime in seconds until the gateway closed it (None: never)."""
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused"
    start = loop.time()
    try:
        writer.write(HEAD)
        read = asyncio.ensure_future(reader.read(4096))
        while loop.time() - start < give_up:
            done, _ = await asyncio.wait({read}, timeout=1.0)
            if done:
                data = read.result()
                if not data:
                    return loop.time() - start
                read = asyncio.ensure_future(reader.read(4096))  # a 408 may precede the close
                continue
            writer.write(b"a")
            await writer.drain()
        read.cancel()
        return None
    except (ConnectionError, OSError):
        return loop.time() - start
    finally:
        writer.close()


async def flood(ports, n, give_up):
    tasks = []
    for port in ports:
        for i in range(n):
            tasks.append(asyncio.ensure_future(trickle(port, give_up)))
            if i % 100 == 99:
                await asyncio.sleep(0)  # let the accept queues drain
    return await asyncio.gather(*tasks)


def probe(urls, stop, results):
    while not stop.is_set():
        for name, url in urls:
            results.setdefault(name, []).append(curl(url))
        time.sleep(0.5)


def summary(name, lifetimes, limit):
    closed = [t for t in lifetimes if isinstance(t, float)]
    never = sum(1 for t in lifetimes if t is None)
    refused = sum(1 for t in lifetimes if t == "refused")
    closed.sort()
    pct = lambda p: closed[min(len(closed) - 1, int(p * len(closed)))] if closed else float("nan")
    print(
        f"  {name}: {len(lifetimes)} trickling connections: {len(closed)} closed by the gateway "
        f"(lifetime min {pct(0):.2f} s, median {pct(0.5):.2f} s, p99 {pct(0.99):.2f} s, "
        f"max {closed[-1] if closed else float('nan'):.2f} s), {never} still open, {refused} refused at connect"
    )
    return never == 0 and refused == 0 and (not closed or closed[-1] <= limit)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/authgate")
    ap.add_argument("--conns", type=int, default=2000, help="trickling connections per listener")
    ap.add_argument("--header-timeout", default="10s")
    ap.add_argument("--admin-max", type=int, default=64)
    ap.add_argument(
        "--legacy", action="store_true", help="a binary before header_timeout: leave the two keys out (for a baseline)"
    )
    args = ap.parse_args()
    timeout = float(args.header_timeout.rstrip("s"))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4 * args.conns + 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the gateway
    print(f"file limit: {want} (hard {hard})")

    upstream = start_upstream()
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(
            tmp,
            listen,
            admin,
            f"127.0.0.1:{upstream.server_address[1]}",
            args.header_timeout,
            args.admin_max,
            args.legacy,
        )
        gw = subprocess.Popen([args.binary, "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return run(gw, listen, admin, args, timeout)
        finally:
            gw.terminate()
            gw.wait()


def run(gw, listen, admin, args, timeout):
    deadline = time.time() + 30
    while curl(f"http://{admin}/readyz")[0] != 200:
        if time.time() > deadline or gw.poll() is not None:
            print("the gateway did not become ready")
            return 1
        time.sleep(0.1)
    # warm up: the first proxied request leaves a pooled upstream connection (one descriptor)
    curl(f"http://{listen}/health")
    curl(f"http://{admin}/healthz")
    time.sleep(1)
    idle = fd_count(gw.pid)
    print(f"gateway pid {gw.pid}: {idle} open file descriptors idle")

    stop, results = threading.Event(), {}
    urls = [("proxy GET /health", f"http://{listen}/health"), ("admin GET /healthz", f"http://{admin}/healthz")]
    prober = threading.Thread(target=probe, args=(urls, stop, results), daemon=True)
    peak = [idle]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], fd_count(gw.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    prober.start()
    sampler.start()
    ports = [int(listen.rsplit(":", 1)[1]), int(admin.rsplit(":", 1)[1])]
    started = time.time()
    lifetimes = asyncio.run(flood(ports, args.conns, timeout + 30))
    took = time.time() - started
    stop.set()
    prober.join()
    sampler.join()
    after = idle
    for _ in range(50):  # the last closes may still be in flight
        after = fd_count(gw.pid)
        if after <= idle:
            break
        time.sleep(0.1)

    limit = timeout + 2
    print(f"{args.conns} trickling connections per listener (one byte a second), header_timeout {args.header_timeout}:")
    ok = summary("proxy", lifetimes[: args.conns], limit)
    ok &= summary("admin", lifetimes[args.conns :], limit)
    for name, rs in results.items():
        good = [t for s, t in rs if s == 200]
        worst = max((t for _, t in rs), default=float("nan"))
        print(f"  {name} during the flood: {len(good)}/{len(rs)} answered 200, slowest {worst * 1000:.0f} ms")
        ok &= len(good) == len(rs) and worst < 1.0
    print(f"  gateway descriptors: {idle} idle, {peak[0]} at peak, {after} after (flood took {took:.1f} s)")
    ok &= after <= idle
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
