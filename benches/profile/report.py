"""Turns callgrind_annotate --inclusive output into instructions per request, per row and per
layer (benches/profile.sh). Usage: report.py rows.tsv N out.md

A layer's cost is the inclusive cost of the function(s) that implement it, summed over the
callgrind entries whose name matches (async fns appear as their `{{closure}}` poll function);
the rows' totals are the whole process (every thread) over the counted requests.
"""
import re
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)\s*(\[.*\])?$")

# (layer, regexes on the function name); the first group is the request head's path
LAYERS = [
    ("request_filter (all of the pipeline + the answer)", [r"AuthProxy as pingora_proxy::proxy_trait::ProxyHttp>::request_filter::\{\{closure\}\}$"]),
    ("  request id", [r"authgate::proxy::request_id::for_request$"]),
    ("  Gateway::admit (decide + stores)", [r"authgate::gateway::Gateway::admit::\{\{closure\}\}$"]),
    ("    step 0: method, path, ;, _method", [r"authgate::policy::pipeline::request_line$"]),
    ("    step 1: route", [r"authgate::policy::routes::RouteTable::route$"]),
    ("    client IP", [r"authgate::policy::client_ip::resolve$"]),
    ("    step 2: token (parse, cache, HMAC)", [r"authgate::policy::token_cache::TokenCache::verify$"]),
    ("      HMAC-SHA256 update + final (aws-lc)", [r"aws_lc_0_47_0_HMAC_Update$", r"aws_lc_0_47_0_HMAC_Final$"]),
    ("  write_denial (render + pingora write)", [r"AuthProxy::write_denial::\{\{closure\}\}$"]),
    ("    render (status, headers, JSON)", [r"authgate::policy::denial::render$"]),
    ("upstream_request_filter (headers for the upstream)", [r"ProxyHttp>::upstream_request_filter::\{\{closure\}\}$"]),
    ("response_filter (headers for the client)", [r"ProxyHttp>::response_filter::\{\{closure\}\}$"]),
    ("logging (metrics + access log)", [r"ProxyHttp>::logging::\{\{closure\}\}$"]),
    ("  access-log line", [r"authgate::access_log::AccessRecord::write$"]),
    ("  metrics", [r"authgate::metrics::Metrics::(request|denied|record_request)$"]),
    ("log writer thread", [r"authgate::logging::.*(writer|drain|flush).*"]),
    ("pingora: read the request head", [r"pingora_core::protocols::http::v1::server::HttpSession::read_request::\{\{closure\}\}$"]),
]


def parse(path):
    total, funcs = None, {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            n = int(m.group(1).replace(",", ""))
            name = m.group(2)
            if name == "PROGRAM TOTALS":
                total = n
                continue
            # a function's own line names its object file ([binary]); the lines without one
            # split the same cost by the source file its inlined code came from
            if not m.group(3):
                continue
            name = name.split(":", 1)[1] if ":" in name else name
            funcs[name] = funcs.get(name, 0) + n
    return total, funcs


def layer_cost(funcs, patterns):
    return sum(n for name, n in funcs.items() if any(re.search(p, name) for p in patterns))


def main():
    rows_tsv, n, out_md = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rows = [line.rstrip("\n").split("\t") for line in open(rows_tsv) if line.strip()]
    parsed = {name: parse(path) for name, path in rows}
    out = []
    out.append(f"Instructions per request (callgrind, {n} requests counted per row, one keep-alive connection)\n")
    out.append("| row | instructions / request |")
    out.append("|---|---:|")
    for name, (total, _) in parsed.items():
        out.append(f"| {name} | {total / n / 1000:.1f}k |")
    for name, (total, funcs) in parsed.items():
        if not name in ("flood", "valid"):
            continue
        out.append(f"\n{name}: by layer (inclusive, per request)\n")
        out.append("| layer | instructions / request |")
        out.append("|---|---:|")
        for label, patterns in LAYERS:
            c = layer_cost(funcs, patterns)
            if c:
                out.append(f"| {label} | {c / n / 1000:.2f}k |")
    text = "\n".join(out) + "\n"
    print(text)
    with open(out_md, "w") as f:
        f.write(text)


main()
