#!/usr/bin/env python3
"""Summarise benches/load.sh runs: medians over rounds, a console table and Markdown.

usage: report.py RESULTS_TSV ROWS_TSV META_TSV OUT_MD
  RESULTS_TSV: row, round, req/s, p50, p99 (wrk units), requests, cpu ticks (one run a line)
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
    for row, _round, rps, p50, p99, reqs, ticks in tsv(results_path):
        reqs = int(reqs)
        cpu_us = int(ticks) / CLK_TCK * 1e6 / reqs if reqs else float("nan")
        runs[row].append((float(rps), ms(p50), ms(p99), cpu_us))
    rows = tsv(rows_path)
    meta = tsv(meta_path)

    med = {}
    for row, *_ in rows:
        if runs[row]:
            med[row] = [statistics.median(col) for col in zip(*runs[row])]
    base = med.get(BASELINE, [float("nan")])[0]

    head = ["config", "req/s", "p50 ms", "p99 ms", "vs bare pingora", "CPU us/req", "RSS MiB", "process"]
    table = []
    for row, label, proc, rss_kb in rows:
        if row not in med:
            continue
        rps, p50, p99, cpu = med[row]
        rss = f"{int(rss_kb) / 1024:.1f}" if rss_kb.isdigit() else "?"
        table.append([label, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}", f"{rps / base:.2f}x", f"{cpu:.1f}", rss, proc])

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


if __name__ == "__main__":
    main()
