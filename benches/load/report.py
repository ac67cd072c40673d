#!/usr/bin/env python3
"""Summarise benches/load.sh runs: medians over rounds, a console table and Markdown.

usage: report.py RESULTS_TSV ROWS_TSV META_TSV OUT_MD
  RESULTS_TSV: row, round, req/s, p50, p99 (wrk units), requests, cpu ticks of the proxy,
               cpu ticks of its companion process (redis-server; 0 for none), one run a line
  ROWS_TSV:    row, label, process, VmRSS kB after the runs (in table order)
  META_TSV:    key, value (machine and parameters, printed above the table)
"""
import os
import statistics
import sys
from collections import defaultdict

CLK_TCK = os.sysconf("SC_CLK_TCK")
BASELINE = "passthrough"


def ms(text):
    """wrk latency ('812.00us', '1.23ms', '1.01s', '2.00m') in milliseconds."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float("nan")


def tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def main():
    results_path, rows_path, meta_path, out_md = sys.argv[1:5]
    runs = defaultdict(list)
    for row, _round, rps, p50, p99, reqs, ticks, ticks2 in tsv(results_path):
        reqs = int(reqs)
        cpu_us = int(ticks) / CLK_TCK * 1e6 / reqs if reqs else float("nan")
        cpu2_us = int(ticks2) / CLK_TCK * 1e6 / reqs if reqs else float("nan")
        runs[row].append((float(rps), ms(p50), ms(p99), cpu_us, cpu2_us))
    rows = tsv(rows_path)
    meta = tsv(meta_path)

    med = {}
    for row, *_ in rows:
        if runs[row]:
            med[row] = [statistics.median(col) for col in zip(*runs[row])]
    base = med.get(BASELINE, [float("nan")])[0]

    head = ["config", "req/s", "p50 ms", "p99 ms", "vs bare pingora", "CPU us/req", "redis-server CPU us/req",
            "RSS MiB", "process"]
    table = []
    for row, label, proc, rss_kb in rows:
        if row not in med:
            continue
        rps, p50, p99, cpu, cpu2 = med[row]
        rss = f"{int(rss_kb) / 1024:.1f}" if rss_kb.isdigit() else "?"
        helper = f"{cpu2:.1f}" if cpu2 > 0 else ""
        vs = "" if row.endswith(("-flood", "-paced")) else f"{rps / base:.2f}x"
        table.append([label, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}", vs, f"{cpu:.1f}", helper, rss, proc])
    targets = target_table(med)

    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print(line(r))

    with open(out_md, "w", encoding="utf-8") as f:
        f.write("# authgate load benchmark\n\n")
        f.write("Written by `bash benches/load.sh` (overwritten on every run).\n\n")
        for key, value in meta:
            f.write(f"- {key}: {value}\n")
        f.write("\nMedians over rounds. `CPU us/req` is the process's user+system CPU time over the timed "
                "run divided by the requests served (for the direct row: nginx's); it is the figure least "
                "disturbed by other load on the machine. `RSS` is VmRSS after all runs. "
                "`vs bare pingora` is req/s relative to `examples/passthrough.rs`. authgate caches verified "
                "tokens (the same token repeats here), so RS256/ES256 cost what HS256 costs after the first "
                "request; HAProxy's `jwt_verify` verifies the signature on every request. wrk, nginx and the "
                "proxy share the machine's CPUs, so on a small machine req/s is bounded by contention; "
                "compare `CPU us/req`.\n\n")
        f.write("| " + " | ".join(head) + " |\n")
        f.write("|" + "|".join("---" if i in (0, len(head) - 1) else "---:" for i in range(len(head))) + "|\n")
        for r in table:
            f.write("| " + " | ".join(r) + " |\n")
        if targets:
            f.write("\n## Against the targets\n\nFrom the medians above (same run). Flood rows: every request "
                    "carries a different bad signature (`benches/load/flood.lua`) and is answered 401.\n\n")
            f.write("| what | authgate | peer | ratio or difference | target |\n|---|---:|---:|---:|---|\n")
            for t in targets:
                f.write("| " + " | ".join(t) + " |\n")
    if targets:
        print()
        for t in targets:
            print(f"  {t[0]}: {t[1]} vs {t[2]} -> {t[3]} (target {t[4]})")


def target_table(med):
    """The issue's targets, computed from the medians (rows missing from an ONLY= run are left out)."""
    out = []

    def have(*rows):
        return all(r in med for r in rows)

    for alg, target in (("rs256", "RS256 >= 1.0x"), ("es256", "ES256 >= 1.2x"), ("hs256", "HS256 >= 1.0x")):
        a, h = f"authgate-{alg}-flood", f"haproxy-{alg}-flood"
        if have(a, h):
            out.append([f"bad-signature flood {alg.upper()}, req/s (CPU us/req)",
                        f"{med[a][0]:,.0f} ({med[a][3]:.1f})", f"HAProxy {med[h][0]:,.0f} ({med[h][3]:.1f})",
                        f"{med[a][0] / med[h][0]:.2f}x", target])
    if have("pingora-deny-flood", "haproxy-hs256-flood"):
        a, h = med["pingora-deny-flood"], med["haproxy-hs256-flood"]
        out.append(["bare pingora answering the 401 itself (no checks), req/s (CPU us/req)",
                     f"{a[0]:,.0f} ({a[3]:.1f})", f"HAProxy HS256 flood {h[0]:,.0f} ({h[3]:.1f})",
                     f"{a[0] / h[0]:.2f}x", "(the floor under every authgate flood row)"])
        if have("authgate-hs256-flood"):
            g = med["authgate-hs256-flood"]
            out.append(["authgate HS256 flood over that floor, CPU us/req", f"{g[3]:.1f}", f"floor {a[3]:.1f}",
                        f"{g[3] - a[3]:+.1f} us", "<= +3 us (all of authgate's layers and the HMAC)"])
    if have("authgate-hs256", "passthrough"):
        a, b = med["authgate-hs256"], med["passthrough"]
        out.append(["valid cached HS256, req/s", f"{a[0]:,.0f}", f"bare pingora {b[0]:,.0f}", f"{a[0] / b[0]:.2f}x", ">= 0.85x (goal 0.95x)"])
        out.append(["valid cached HS256, CPU us/req", f"{a[3]:.1f}", f"bare pingora {b[3]:.1f}", f"{a[3] - b[3]:+.1f} us",
                    "<= +1.5 us"])
        out.append(["valid cached HS256, p99 ms", f"{a[2]:.2f}", f"bare pingora {b[2]:.2f}", f"{a[2] - b[2]:+.2f} ms",
                    "<= +0.2 ms"])
    # The Redis target is judged at equal offered load (the paced rows): at saturation the
    # embedded row serves more requests per event-loop wake-up than the Redis row, whose
    # redis-server takes CPU from wrk and nginx on a small machine, and CPU per request
    # falls with load. The saturated pair is shown as well.
    for suffix, how in (("-paced", "paced, same offered load"), ("", "saturated")):
        r, e = f"authgate-redis-hs256{suffix}", f"authgate-hs256{suffix}"
        if have(r, e):
            a, b = med[r], med[e]
            target = ("<= +10 us", "<= +0.5 ms") if suffix else ("(see the paced rows)", "(see the paced rows)")
            out.append([f"HS256 with [redis] ({how}), authgate CPU us/req", f"{a[3]:.1f}", f"embedded {b[3]:.1f}",
                        f"{a[3] - b[3]:+.1f} us", target[0]])
            out.append([f"HS256 with [redis] ({how}), p99 ms", f"{a[2]:.2f}", f"embedded {b[2]:.2f}",
                        f"{a[2] - b[2]:+.2f} ms", target[1]])
    if have("authgate-hs256-tls", "authgate-hs256"):
        a, b = med["authgate-hs256-tls"], med["authgate-hs256"]
        out.append(["HS256 over TLS (keep-alive), CPU us/req", f"{a[3]:.1f}", f"plain {b[3]:.1f}", f"{a[3] - b[3]:+.1f} us", "(no target)"])
    return out


if __name__ == "__main__":
    main()
