#!/usr/bin/env bash
# benches/load.sh: the load comparison. authgate with every layer on (plain HTTP, a second
# instance with [server.tls], same run, keep-alive, and a third sharing its limits through a
# local redis-server) vs a bare pingora pass-through (examples/passthrough.rs, the physical
# limit) vs HAProxy 2.6 doing the same job with jwt_verify, and the upstream alone. The
# flood rows send a different bad signature on every request (benches/load/flood.lua), so
# each one costs a full verification and ends in 401. Run from the repo root:
#
#   bash benches/load.sh
#
# Environment (defaults): ROUNDS=3 DURATION=10s CONNS=32 THREADS=1 (wrk), PROXY_THREADS=1
# (worker threads of every proxy), WARMUP=2s (per config, before the rounds; 0 = none),
# PACE_MS=6 (paced rows: each connection's pause between requests, benches/load/paced.lua),
# SKIP_BUILD=1 (use the existing target/release binaries; not after .ci/run, whose
# wrapper builds the passthrough example at opt-level 0), KEEP=1 (keep the temp dir),
# OUT_MD=benches/load-results.md, ONLY="row ..." (run only these rows, e.g. ONLY="passthrough
# authgate-hs256 authgate-hs256-tls" for plain vs TLS). Needs: cargo, wrk, haproxy 2.6+, nginx, openssl,
# python3, curl, redis-server. Every process listens on 127.0.0.1 on a free port and is stopped on exit.
# authgate's access log goes to a file in the temp dir ($TMPDIR): ~0.7 GB with the defaults.
set -euo pipefail

ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s} CONNS=${CONNS:-32} THREADS=${THREADS:-1}
PROXY_THREADS=${PROXY_THREADS:-1} WARMUP=${WARMUP:-2s} PACE_MS=${PACE_MS:-6}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPL=$ROOT/benches/load
OUT_MD=${OUT_MD:-$ROOT/benches/load-results.md}
AUTHGATE=$ROOT/target/release/authgate
PASSTHROUGH=$ROOT/target/release/examples/passthrough
ORG=a1b2c3d4-e5f6-7890-abcd-ef1234567890 OTHER_ORG=0f0f0f0f-0000-4000-8000-000000000002
CLIENT_IP=203.0.113.9 DENIED_IP=198.51.100.200
REQ_PATH=/partner/v1/orgs/$ORG/members
WORK=$(mktemp -d "${TMPDIR:-/tmp}/authgate-load.XXXXXX")
declare -A PID=() ROW_PORT=() ROW_TOKEN=() ROW_PROC=() ROW_LABEL=() ROW_AUTH=() ROW_SCHEME=()
declare -A ROW_FLOOD=() ROW_PROC2=() ROW_PACED=() ROW_POST=()
ROWS=() ALL_PIDS=()

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'load.sh: ERROR: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local rc=$? p deadline=$((SECONDS + 5))
  trap - EXIT INT TERM
  for p in ${ALL_PIDS[@]+"${ALL_PIDS[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
  for p in ${ALL_PIDS[@]+"${ALL_PIDS[@]}"}; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

check_tools() {
  local missing=() t v tools=(wrk haproxy nginx openssl python3 curl redis-server)
  [[ ${SKIP_BUILD:-0} == 1 ]] || tools+=(cargo)
  for t in "${tools[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  ((${#missing[@]} == 0)) || die "missing: ${missing[*]}.
  Install with: sudo apt-get install wrk haproxy nginx-light openssl python3 curl redis-server
  (cargo: https://rustup.rs; HAProxy must be 2.6 or newer, for jwt_verify)"
  v=$(haproxy -v 2>&1 | sed -n '1s/^HA-\{0,1\}Proxy version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || true
  read -r t v <<<"${v:-0 0}"
  ((t > 2 || (t == 2 && v >= 6))) || die "haproxy $t.$v is too old: jwt_verify needs 2.6+ (apt-get install haproxy)"
  v=$(haproxy -vv 2>&1) || true
  [[ $v == *+OPENSSL* ]] || die "this haproxy is built without OpenSSL: no jwt_verify"
}

build() {
  if [[ ${SKIP_BUILD:-0} == 1 ]]; then say "SKIP_BUILD=1: using existing binaries"
  else say "cargo build --release --bin authgate --example passthrough"
    (cd "$ROOT" && cargo build --release --bin authgate --example passthrough)
  fi
  [[ -x $AUTHGATE && -x $PASSTHROUGH ]] || die "release binaries missing: $AUTHGATE $PASSTHROUGH"
}

# free_ports, render, render_nginx_conf
source "$ROOT/benches/lib.sh"

start() { # name cmd...: background, stdout+stderr to $WORK/name.log
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!; ALL_PIDS+=("$!")
}

wait_ready() { # name url wanted-status-regex [curl args...]
  local name=$1 url=$2 want=$3 code deadline=$((SECONDS + ${READY_TIMEOUT:-30})); shift 3
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null) || true
    [[ $code =~ ^($want)$ ]] && return 0
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      tail -n 20 "$WORK/$name.log" >&2; die "$name exited during startup (log above)"
    fi
    ((SECONDS < deadline)) || die "$name not ready at $url after ${READY_TIMEOUT:-30}s (last status $code, log $WORK/$name.log)"
    sleep 0.05
  done
}

gen_keys() {
  say "generating keys in $WORK"
  (cd "$WORK"
   openssl rand -hex 32 | tr -d '\n' >hs.secret
   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rs.key.pem 2>/dev/null
   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out es.key.pem 2>/dev/null
   # HAProxy 2.6 jwt_verify takes a public key PEM (2.6.12 fails to load a certificate: -5).
   for k in rs es; do openssl pkey -in $k.key.pem -pubout -out $k.pub.pem; done
   # the TLS instance's certificate (P-256, self-signed; wrk does not verify it)
   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.pem \
     -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null)
  HS_SECRET=$(cat "$WORK/hs.secret") RS_PEM=$WORK/rs.pub.pem ES_PEM=$WORK/es.pub.pem
}

mint() { # kid [jti]
  "$AUTHGATE" token --config "$WORK/authgate.toml" --partner bench --key-id "${2:-key-bench-1}" --kid "$1" --ttl 1h
}

tamper() { # token -> same token with one signature character changed
  local head=${1%.*} sig=${1##*.} i r=A
  i=$((${#sig} / 2)); [[ ${sig:i:1} == A ]] && r=B
  printf '%s.%s%s%s' "$head" "${sig:0:i}" "$r" "${sig:i+1}"
}

start_all() {
  local ports
  ports=$(free_ports 12)
  read -r UPSTREAM_PORT PASS_PORT AG_PORT AG_ADMIN_PORT HA_JWT_PORT HA_PURE_PORT AG_TLS_PORT AG_TLS_ADMIN_PORT \
    REDIS_PORT AG_REDIS_PORT AG_REDIS_ADMIN_PORT DENY_PORT <<<"$ports"
  local nofile
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  nofile=$(ulimit -n); [[ $nofile == unlimited ]] && nofile=65536
  HA_MAXCONN=$(( (nofile - 100) / 2 > 20000 ? 20000 : (nofile - 100) / 2 ))
  render_nginx_conf
  render authgate.toml.in "$WORK/authgate.toml" AG_PORT AG_ADMIN_PORT PROXY_THREADS UPSTREAM_PORT
  # the same config with [server.tls], on its own ports (same policy, keys and upstream)
  (AG_PORT=$AG_TLS_PORT AG_ADMIN_PORT=$AG_TLS_ADMIN_PORT
   render authgate.toml.in "$WORK/authgate-tls.toml" AG_PORT AG_ADMIN_PORT PROXY_THREADS UPSTREAM_PORT)
  printf '\n[server.tls]\ncert_file = "tls.pem"\nkey_file = "tls.key"\n' >>"$WORK/authgate-tls.toml"
  # and with [redis]: limits (and learned orgs, revocations) shared through redis-server
  (AG_PORT=$AG_REDIS_PORT AG_ADMIN_PORT=$AG_REDIS_ADMIN_PORT
   render authgate.toml.in "$WORK/authgate-redis.toml" AG_PORT AG_ADMIN_PORT PROXY_THREADS UPSTREAM_PORT)
  printf '\n[redis]\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT" >>"$WORK/authgate-redis.toml"
  render partners.toml.in "$WORK/partners.toml" CLIENT_IP ORG OTHER_ORG
  # the validation rows: the shipped Partner API spec twice, validate = enforce and off
  cp "$ROOT/config/openapi/partner-api.yaml" "$WORK/partner-api.yaml"
  sed 's/operationId: /operationId: off_/' "$ROOT/config/openapi/partner-api.yaml" >"$WORK/partner-api-off.yaml"
  python3 "$TPL/body.py" >"$WORK/body.json"
  render haproxy-jwt.cfg.in "$WORK/haproxy-jwt.cfg" PROXY_THREADS HA_MAXCONN HA_JWT_PORT HS_SECRET RS_PEM ES_PEM WORK UPSTREAM_PORT
  render haproxy-pure.cfg.in "$WORK/haproxy-pure.cfg" PROXY_THREADS HA_MAXCONN HA_PURE_PORT UPSTREAM_PORT
  printf '%s bench\n%s other\n' "$ORG" "$OTHER_ORG" >"$WORK/orgs.map"
  "$AUTHGATE" check --config "$WORK/authgate.toml" >/dev/null || die "authgate check failed on $WORK/authgate.toml"
  "$AUTHGATE" check --config "$WORK/authgate-tls.toml" >/dev/null || die "authgate check failed on $WORK/authgate-tls.toml"
  "$AUTHGATE" check --config "$WORK/authgate-redis.toml" >/dev/null || die "authgate check failed on $WORK/authgate-redis.toml"
  haproxy -c -q -f "$WORK/haproxy-jwt.cfg" || die "haproxy -c failed on $WORK/haproxy-jwt.cfg"

  say "starting nginx :$UPSTREAM_PORT, passthrough :$PASS_PORT, authgate :$AG_PORT (admin :$AG_ADMIN_PORT), authgate TLS :$AG_TLS_PORT (admin :$AG_TLS_ADMIN_PORT), haproxy :$HA_JWT_PORT (jwt) :$HA_PURE_PORT (pure)"
  start nginx nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf"
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK"
  wait_ready nginx "http://127.0.0.1:$UPSTREAM_PORT/" 200
  start passthrough "$PASSTHROUGH" --listen "127.0.0.1:$PASS_PORT" --upstream "127.0.0.1:$UPSTREAM_PORT" --threads "$PROXY_THREADS"
  # the same binary answering authgate's 401 itself: what pingora alone costs per refusal
  start pingora-deny "$PASSTHROUGH" --listen "127.0.0.1:$DENY_PORT" --upstream "127.0.0.1:$UPSTREAM_PORT" --threads "$PROXY_THREADS" --deny
  start authgate "$AUTHGATE" --config "$WORK/authgate.toml"
  start authgate-tls "$AUTHGATE" --config "$WORK/authgate-tls.toml"
  start authgate-redis "$AUTHGATE" --config "$WORK/authgate-redis.toml"
  start haproxy-jwt haproxy -db -f "$WORK/haproxy-jwt.cfg"
  start haproxy-pure haproxy -db -f "$WORK/haproxy-pure.cfg"
  wait_ready passthrough "http://127.0.0.1:$PASS_PORT/" 200
  wait_ready pingora-deny "http://127.0.0.1:$DENY_PORT/" 401
  wait_ready authgate "http://127.0.0.1:$AG_ADMIN_PORT/readyz" 200
  wait_ready authgate-tls "http://127.0.0.1:$AG_TLS_ADMIN_PORT/readyz" 200
  wait_ready authgate-redis "http://127.0.0.1:$AG_REDIS_ADMIN_PORT/readyz" 200
  wait_redis_up
  TLS_PARAMS=$(tls_params)
  wait_ready haproxy-jwt "http://127.0.0.1:$HA_JWT_PORT/" '[1-5][0-9][0-9]'
  wait_ready haproxy-pure "http://127.0.0.1:$HA_PURE_PORT/" 200
}

add_row() { # id label process port token auth(yes|no) [scheme, default http]
  ROWS+=("$1"); ROW_LABEL[$1]=$2 ROW_PROC[$1]=$3 ROW_PORT[$1]=$4 ROW_TOKEN[$1]=$5 ROW_AUTH[$1]=$6
  ROW_SCHEME[$1]=${7:-http} ROW_FLOOD[$1]=0 ROW_PROC2[$1]="" ROW_PACED[$1]=0 ROW_POST[$1]=""
}

add_post_row() { # id label process port token path: like add_row, but wrk POSTs $WORK/body.json to path
  add_row "$1" "$2" "$3" "$4" "$5" yes
  ROW_POST[$1]=$6
}

add_paced_row() { # id label process port token: like add_row, but every connection waits PACE_MS between requests
  add_row "$1" "$2" "$3" "$4" "$5" yes
  ROW_PACED[$1]=1
}

add_flood_row() { # id label process port token: like add_row, but wrk varies the signature
  add_row "$1" "$2" "$3" "$4" "$5" yes
  ROW_FLOOD[$1]=1
}

wait_redis_up() { # the [redis] instance reports authgate_redis_up 1 (its circuit is closed)
  local deadline=$((SECONDS + ${READY_TIMEOUT:-30}))
  until curl -s --max-time 1 "http://127.0.0.1:$AG_REDIS_ADMIN_PORT/metrics" | grep -q '^authgate_redis_up 1'; do
    ((SECONDS < deadline)) || die "authgate-redis never reported authgate_redis_up 1 (logs: $WORK/authgate-redis.log, $WORK/redis.log)"
    sleep 0.05
  done
}

base_url() { echo "${ROW_SCHEME[$1]}://127.0.0.1:${ROW_PORT[$1]}"; } # row -> scheme://host:port

status_of() { # base-url token xff [path] -> HTTP status ("" token = no Authorization header)
  local h=()
  [[ -n $2 ]] && h=(-H "Authorization: Bearer $2")
  # -k: the TLS row's certificate is self-signed (curl keeps HTTP/1.1 there, like wrk)
  curl -sk --http1.1 -o /dev/null -w '%{http_code}' --max-time 5 ${h[@]+"${h[@]}"} -H "X-Forwarded-For: $3" \
    "$1${4:-$REQ_PATH}" || true
}

probe() { # row -> empty when the row answers as it must, else what went wrong
  local r=$1 p t=${ROW_TOKEN[$1]} c
  p=$(base_url "$1")
  c=$(status_of "$p" "$t" "$CLIENT_IP"); [[ $c == 200 ]] || { echo "valid token -> $c, want 200"; return; }
  [[ ${ROW_AUTH[$r]} == yes ]] || return 0
  c=$(status_of "$p" "" "$CLIENT_IP"); [[ $c == 401 ]] || echo "no token -> $c, want 401"
}

probe_row() { # row -> probe, or for a row that refuses everything by design (the pingora 401 floor) probe_flood
  if [[ ${ROW_FLOOD[$1]} == 1 && ${ROW_AUTH[$1]} == no ]]; then probe_flood "$1"; else probe "$1"; fi
  [[ -z ${ROW_POST[$1]} ]] || probe_post "$1"
}

probe_post() { # post row -> empty when the valid body is forwarded (200) and a body without a name is refused (enforce) or forwarded (off)
  local c want=200
  c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H "Authorization: Bearer ${ROW_TOKEN[$1]}" \
    -H "X-Forwarded-For: $CLIENT_IP" -H 'Content-Type: application/json' --data-binary "@$WORK/body.json" \
    "$(base_url "$1")${ROW_POST[$1]}" || true)
  [[ $c == 200 ]] || { echo "valid body -> $c, want 200"; return; }
  [[ ${ROW_POST[$1]} == /enforce/* ]] && want=400
  c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H "Authorization: Bearer ${ROW_TOKEN[$1]}" \
    -H "X-Forwarded-For: $CLIENT_IP" -H 'Content-Type: application/json' --data-binary '{"external_id":"x"}' \
    "$(base_url "$1")${ROW_POST[$1]}" || true)
  [[ $c == "$want" ]] || echo "body without a name -> $c, want $want"
}

probe_flood() { # flood row -> empty when a tampered token of its kind is answered 401
  local c
  c=$(status_of "$(base_url "$1")" "$(tamper "${ROW_TOKEN[$1]}")" "$CLIENT_IP")
  [[ $c == 401 ]] || echo "bad signature -> $c, want 401"
}

enforcement() { # row -> empty when bad token / foreign IP / foreign org / revoked key are refused
  local p t=${ROW_TOKEN[$1]} c
  p=$(base_url "$1")
  c=$(status_of "$p" "$(tamper "$t")" "$CLIENT_IP"); [[ $c =~ ^40[13]$ ]] || echo "bad signature -> $c, want 401/403;"
  c=$(status_of "$p" "$REVOKED" "$CLIENT_IP"); [[ $c == 401 ]] || echo "revoked key -> $c, want 401;"
  c=$(status_of "$p" "$t" "$DENIED_IP"); [[ $c == 403 ]] || echo "IP outside the allow list -> $c, want 403;"
  c=$(status_of "$p" "$t" "$CLIENT_IP" "/partner/v1/orgs/$OTHER_ORG/members")
  [[ $c == 403 ]] || echo "another partner's org -> $c, want 403;"
}

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

run_wrk() { # row duration [round]: timed run, appends to results.tsv when a round is given
  local r=$1 pid=${PID[${ROW_PROC[$1]}]} pid2="" out before after before2=0 after2=0 rps reqs p50 p99 bad
  local rss_before
  [[ -n ${ROW_PROC2[$r]} ]] && pid2=${PID[${ROW_PROC2[$r]}]}
  rss_before=$(rss_kb "$pid")
  before=$(cpu_ticks "$pid"); [[ -n $pid2 ]] && before2=$(cpu_ticks "$pid2")
  if [[ ${ROW_FLOOD[$r]} == 1 ]]; then
    out=$(FLOOD_TOKEN=${ROW_TOKEN[$r]} FLOOD_PATH=$REQ_PATH FLOOD_XFF=$CLIENT_IP \
      wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency -s "$TPL/flood.lua" "$(base_url "$r")$REQ_PATH") || die "wrk failed on $r"
  elif [[ -n ${ROW_POST[$r]} ]]; then
    out=$(POST_BODY_FILE=$WORK/body.json wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency -s "$TPL/post.lua" \
      -H "Authorization: Bearer ${ROW_TOKEN[$r]}" -H "X-Forwarded-For: $CLIENT_IP" "$(base_url "$r")${ROW_POST[$r]}") ||
      die "wrk failed on $r"
  elif [[ ${ROW_PACED[$r]} == 1 ]]; then
    out=$(PACE_MS=$PACE_MS wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency -s "$TPL/paced.lua" \
      -H "Authorization: Bearer ${ROW_TOKEN[$r]}" -H "X-Forwarded-For: $CLIENT_IP" "$(base_url "$r")$REQ_PATH") ||
      die "wrk failed on $r"
  else
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency -H "Authorization: Bearer ${ROW_TOKEN[$r]}" \
      -H "X-Forwarded-For: $CLIENT_IP" "$(base_url "$r")$REQ_PATH") || die "wrk failed on $r"
  fi
  after=$(cpu_ticks "$pid"); [[ -n $pid2 ]] && after2=$(cpu_ticks "$pid2")
  [[ -z ${3:-} ]] && return 0
  if [[ ${ROW_FLOOD[$r]} == 1 ]]; then
    printf '%s\t%s\t%s\t%s\n' "$r" "$3" "$rss_before" "$(rss_kb "$pid")" >>"$WORK/flood-rss.tsv"
  fi
  printf '%s\n' "$out" >"$WORK/wrk-$r-$3.txt"
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out"); p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  [[ -n $rps && -n $reqs && -n $p50 && -n $p99 ]] || die "cannot parse wrk output for $r: $out"
  bad=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  if [[ ${ROW_FLOOD[$r]} == 1 ]]; then # every answer must be a refusal (probe_flood checked it is a 401)
    [[ ${bad:-0} == "$reqs" ]] || die "$r: only ${bad:-0} of $reqs flood requests were refused (see $WORK/wrk-$r-$3.txt)"
  else
    [[ -z $bad ]] || die "$r: $bad of $reqs responses were not 2xx during the timed run (see $WORK/wrk-$r-$3.txt)"
  fi
  grep -q 'Socket errors' <<<"$out" && warn "$r round $3: $(grep 'Socket errors' <<<"$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$3" "$rps" "$p50" "$p99" "$reqs" "$((after - before))" \
    "$((after2 - before2))" >>"$WORK/results.tsv"
  printf '    %-20s %10s req/s  p50 %-9s p99 %-9s\n' "$r" "$rps" "$p50" "$p99" >&2
}

tls_params() { # what a default OpenSSL client (as wrk) negotiates with the TLS instance
  openssl s_client -brief -connect "127.0.0.1:$AG_TLS_PORT" -servername localhost </dev/null 2>&1 |
    awk -F': *' '/^Protocol version/ {p=$2} /^Ciphersuite/ {c=$2} END {printf "%s %s", p, c}' || true
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
busy() { awk -v l="$1" 'BEGIN {exit !(l > 1.5)}'; }

main() {
  cd "$ROOT"
  check_tools
  build
  gen_keys
  start_all
  local hs rs es why r i n round
  hs=$(mint bench-hs) rs=$(mint bench-rs) es=$(mint bench-es)
  REVOKED=$(mint bench-hs key-bench-leaked)
  add_row direct "(a) upstream direct (nginx)" nginx "$UPSTREAM_PORT" "$hs" no
  add_row passthrough "(b) bare pingora pass-through" passthrough "$PASS_PORT" "$hs" no
  add_row authgate-hs256 "(c) authgate, all layers, HS256" authgate "$AG_PORT" "$hs" yes
  add_row authgate-hs256-tls "(c) authgate, all layers, HS256, over TLS (keep-alive)" authgate-tls "$AG_TLS_PORT" "$hs" yes https
  add_row authgate-rs256 "(d) authgate, all layers, RS256" authgate "$AG_PORT" "$rs" yes
  add_row authgate-es256 "(d) authgate, all layers, ES256" authgate "$AG_PORT" "$es" yes
  add_row authgate-redis-hs256 "(g) authgate + Redis (shared limits), HS256" authgate-redis "$AG_REDIS_PORT" "$hs" yes
  ROW_PROC2[authgate-redis-hs256]=redis
  add_paced_row authgate-hs256-paced "(g) authgate, HS256, paced (same offered load as the next row)" authgate "$AG_PORT" "$hs"
  add_paced_row authgate-redis-hs256-paced "(g) authgate + Redis, HS256, paced" authgate-redis "$AG_REDIS_PORT" "$hs"
  ROW_PROC2[authgate-redis-hs256-paced]=redis
  add_row haproxy-hs256 "(e) HAProxy jwt_verify, HS256" haproxy-jwt "$HA_JWT_PORT" "$hs" yes
  add_row haproxy-rs256 "(e) HAProxy jwt_verify, RS256" haproxy-jwt "$HA_JWT_PORT" "$rs" yes
  add_row haproxy-es256 "(e) HAProxy jwt_verify, ES256" haproxy-jwt "$HA_JWT_PORT" "$es" yes
  add_row haproxy-pure "(f) HAProxy pure proxy" haproxy-pure "$HA_PURE_PORT" "$hs" no
  add_post_row authgate-validate-enforce "(k) authgate, POST ~1 KB create-org body, validate = enforce" authgate "$AG_PORT" "$hs" /enforce/partner/v1/orgs
  add_post_row authgate-validate-off "(k) authgate, POST ~1 KB create-org body, validate = off" authgate "$AG_PORT" "$hs" /off/partner/v1/orgs
  add_flood_row authgate-hs256-flood "(h) authgate, bad-signature flood, HS256" authgate "$AG_PORT" "$hs"
  add_flood_row authgate-rs256-flood "(h) authgate, bad-signature flood, RS256" authgate "$AG_PORT" "$rs"
  add_flood_row authgate-es256-flood "(h) authgate, bad-signature flood, ES256" authgate "$AG_PORT" "$es"
  add_row pingora-deny-flood "(j) bare pingora answering the same 401 itself (passthrough --deny), flood" pingora-deny "$DENY_PORT" "$hs" no
  ROW_FLOOD[pingora-deny-flood]=1
  add_flood_row haproxy-hs256-flood "(i) HAProxy jwt_verify, bad-signature flood, HS256" haproxy-jwt "$HA_JWT_PORT" "$hs"
  add_flood_row haproxy-rs256-flood "(i) HAProxy jwt_verify, bad-signature flood, RS256" haproxy-jwt "$HA_JWT_PORT" "$rs"
  add_flood_row haproxy-es256-flood "(i) HAProxy jwt_verify, bad-signature flood, ES256" haproxy-jwt "$HA_JWT_PORT" "$es"

  if [[ -n ${ONLY:-} ]]; then
    local only=() want
    for want in $ONLY; do
      [[ -n ${ROW_LABEL[$want]:-} ]] || die "ONLY: no row $want (rows: ${ROWS[*]})"
      only+=("$want")
    done
    ROWS=("${only[@]}")
  fi

  say "checking that every config answers and enforces"
  local kept=()
  for r in "${ROWS[@]}"; do
    why=$(probe_row "$r")
    [[ ${ROW_AUTH[$r]} == yes && -z $why ]] && why=$(enforcement "$r")
    [[ ${ROW_FLOOD[$r]} == 1 && -z $why ]] && why=$(probe_flood "$r")
    if [[ -z $why ]]; then kept+=("$r")
    elif [[ $r == authgate-* ]]; then die "$r does not behave: $why (log: $WORK/authgate.log)"
    else warn "skipping $r: it does not behave as the comparison needs: $why"; fi
  done
  ROWS=("${kept[@]}")

  local load_start; load_start=$(loadavg)
  busy "$load_start" && warn "load average is $load_start (> 1.5): another job is running, the numbers are unreliable"
  if [[ $WARMUP != 0 ]]; then
    say "warm-up: $WARMUP per config"
    for r in "${ROWS[@]}"; do run_wrk "$r" "$WARMUP"; done
  fi
  n=${#ROWS[@]}
  for ((round = 1; round <= ROUNDS; round++)); do
    say "round $round/$ROUNDS (wrk -t$THREADS -c$CONNS -d$DURATION, proxies at $PROXY_THREADS thread(s))"
    for ((i = 0; i < n; i++)); do
      r=${ROWS[(i + round - 1) % n]}
      why=$(probe_row "$r"); [[ -z $why ]] || die "$r failed its probe before the timed run: $why"
      run_wrk "$r" "$DURATION" "$round"
    done
  done
  local load_end; load_end=$(loadavg)

  : >"$WORK/rows.tsv"
  for r in "${ROWS[@]}"; do
    printf '%s\t%s\t%s\t%s\n' "$r" "${ROW_LABEL[$r]}" "${ROW_PROC[$r]}" "$(rss_kb "${PID[${ROW_PROC[$r]}]}")" >>"$WORK/rows.tsv"
  done
  local model git_rev lines errs
  lines=$(wc -l <"$WORK/authgate.log")
  errs=$(grep -c -E '"level":"(ERROR|WARN)"' "$WORK/authgate.log" || true)
  model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
  [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && git_rev+=" (dirty tree)"
  {
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'machine\t%s CPUs (nproc), %s, Linux %s\n' "$(nproc)" "${model:-unknown CPU}" "$(uname -r)"
    printf 'commit\t%s\n' "$git_rev"
    printf 'proxy worker threads\t%s (authgate, pass-through, HAProxy nbthread); nginx upstream: 1 worker\n' "$PROXY_THREADS"
    printf 'wrk\t-t%s -c%s -d%s --latency, %s interleaved rounds (order rotated), %s warm-up\n' "$THREADS" "$CONNS" "$DURATION" "$ROUNDS" "$WARMUP"
    printf 'paced rows\twrk with benches/load/paced.lua: each connection pauses a random time averaging %s ms after every response, so both rows get about the same offered load below saturation (CPU per request is only comparable at equal load)\n' "$PACE_MS"
    printf 'request\tGET %s with a Bearer token and X-Forwarded-For: %s\n' "/partner/v1/orgs/{org_id}/members" "$CLIENT_IP"
    printf 'versions\t%s; %s; %s\n' "$(haproxy -v 2>&1 | head -1 | cut -d' ' -f1-3)" "$(nginx -v 2>&1)" "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    printf 'load average (1 min)\t%s before the runs%s; %s at the end (includes the benchmark itself)\n' \
      "$load_start" "$(busy "$load_start" && echo ' (above 1.5: another job was running, unreliable numbers)')" "$load_end"
    printf 'authgate\tVmRSS %s kB after its runs; log (access_log on, to a file): %s lines, %s WARN/ERROR\n' \
      "$(rss_kb "${PID[authgate]}")" "$lines" "$errs"
    printf 'authgate + Redis\tredis-server %s on 127.0.0.1 (no persistence), [redis] defaults; one GCRA script (EVALSHA) per request for the partner limit; the redis-server CPU column is its own CPU per request\n' \
      "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
    if [[ -s $WORK/flood-rss.tsv ]]; then
      printf 'authgate RSS over the floods\t%s\n' "$(awk -F'\t' 'NR == 1 {first = $3} {if ($4 > max) max = $4} END {printf "%.1f MiB before the first flood run, %.1f MiB at most after one (%+.1f MiB); sampled before and after each timed flood run", first / 1024, max / 1024, (max - first) / 1024}' "$WORK/flood-rss.tsv")"
    fi
    printf 'authgate over TLS\t%s; ECDSA P-256 self-signed certificate; wrk keeps its %s connections alive, so a handshake per connection, not per request\n' \
      "${TLS_PARAMS:-?}" "$CONNS"
  } >"$WORK/meta.tsv"
  echo >&2
  python3 "$TPL/report.py" "$WORK/results.tsv" "$WORK/rows.tsv" "$WORK/meta.tsv" "$OUT_MD"
  echo
  printf 'authgate VmRSS after its runs: %s kB\n' "$(rss_kb "${PID[authgate]}")"
  printf 'authgate log: %s lines (%s), %s WARN/ERROR lines\n' "$lines" "$(du -h "$WORK/authgate.log" | cut -f1)" "$errs"
  if ((errs > 0)); then # the distinct messages, most frequent first
    { grep -E '"level":"(ERROR|WARN)"' "$WORK/authgate.log" | sed 's/.*"message":"\([^"]*\)".*/\1/' \
        | cut -c1-150 | sort | uniq -c | sort -rn | head -5; } || true
  fi
  busy "$load_start" && warn "load average was $load_start before the runs (> 1.5): the numbers are unreliable"
  say "written $OUT_MD"
}

main "$@"
