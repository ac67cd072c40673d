"""Sends N requests over one keep-alive connection and reads each answer (benches/profile.sh).

--mode flood: each request carries TOKEN with a different signature (same length and
alphabet), so each costs a full verification and ends in 401; --mode valid: the same valid
token every time (the token cache's path). Exits 1 when an answer has another status than
expected.
"""
import argparse
import socket
import sys

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def tokens(token, mode):
    head, sig = token.rsplit(".", 1)
    at = len(sig) // 4
    n = 0
    while True:
        if mode == "valid":
            yield token
            continue
        k, tail = n, ""
        for _ in range(4):
            tail += ALPHABET[k % 64]
            k //= 64
        flipped = "A" if sig[at] != "A" else "B"
        yield f"{head}.{sig[:at]}{flipped}{tail}{sig[at + 5:]}"
        n += 1


def read_response(f):
    status = f.readline()
    if not status:
        raise SystemExit("connection closed")
    code = int(status.split()[1])
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    f.read(length)
    return code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--mode", choices=["flood", "valid"], required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--expect", type=int, required=True)
    a = ap.parse_args()
    s = socket.create_connection(("127.0.0.1", a.port))
    f = s.makefile("rb")
    gen = tokens(a.token, a.mode)
    for _ in range(a.n):
        req = (
            f"GET {a.path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {next(gen)}\r\n"
            "X-Forwarded-For: 203.0.113.9\r\n\r\n"
        )
        s.sendall(req.encode())
        code = read_response(f)
        if code != a.expect:
            sys.exit(f"got {code}, expected {a.expect}")


main()
