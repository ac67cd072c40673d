"""Turns callgrind dumps into instructions per request, per row and per layer
(benches/profile.sh). Usage: report.py rows.tsv N out.md (rows.tsv: row name, dump path).

A layer's cost is the inclusive cost of the function(s) that implement it: the cost of every
call into them from a function outside the layer, read from the dump's call records (async
fns appear as their `{{closure}}` poll function). callgrind_annotate's inclusive listing is
not used: with line tables it splits one function's cost over the source files its inlined
code came from, and which of those lines holds the whole is not stable. The rows' totals
are the whole process (every thread) over the counted requests.
"""
import re
import sys

NAMED = re.compile(r"^\((\d+)\)(?: (.*))?$")

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
    # the compiler may put logging's body in the async fn or in its future: both are counted
    ("logging (metrics + access log)", [r"ProxyHttp>::logging::\{\{closure\}\}$", r"ProxyHttp>::logging$"]),
    ("  access-log line", [r"authgate::access_log::AccessRecord::line$"]),
    ("  metrics", [r"authgate::gateway::Gateway::record_(request|validation)$", r"prometheus::histogram::Histogram::observe$"]),
    ("log writer thread", [r"authgate::logging::.*(writer|drain|flush).*"]),
    ("pingora: read the request head", [r"pingora_core::protocols::http::v1::server::HttpSession::read_request::\{\{closure\}\}$"]),
]


def parse(path):
    """(total, {(caller, callee): inclusive cost of the calls}) from one callgrind dump."""
    names, edges, total = {}, {}, None
    fn = cfn = None
    pending = False

    def name(text):
        m = NAMED.match(text)
        if not m:
            return text
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), text)

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(line[3:].rstrip("\n"))
            elif line.startswith("cfn="):
                cfn = name(line[4:].rstrip("\n"))
            elif line.startswith("calls="):
                pending = True
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
            elif pending and line[:1] in "0123456789+-*":
                parts = line.split()
                if len(parts) > 1 and fn != cfn:
                    edges[(fn, cfn)] = edges.get((fn, cfn), 0) + int(parts[1])
                pending = False
    return total, edges


def layer_cost(edges, patterns):
    def inside(name):
        return any(re.search(p, name) for p in patterns)

    return sum(n for (caller, callee), n in edges.items() if inside(callee) and not inside(caller))


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
