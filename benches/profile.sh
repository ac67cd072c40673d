#!/usr/bin/env bash
# benches/profile.sh: instructions per request, counted by callgrind (repeatable whatever else
# the machine does), for the rows the refusal and cached-path targets are about:
#
#   flood    authgate, a different bad HS256 signature per request -> 401 (the refusal path)
#   floor    bare pingora answering the same 401 itself (examples/passthrough --deny)
#   valid    authgate, one valid HS256 token (the token cache's path) -> 200 from nginx
#   pass     bare pingora pass-through to the same nginx
#
# and, for the authgate rows, the inclusive cost of each layer on the path (request id, step 0,
# routing, client IP, the token, the denial, the access log, metrics, ...), from the dump's
# call records (benches/profile/report.py). Each process runs under valgrind with instrumentation off until it is
# up; then N/10 warm-up requests, counters zeroed, N counted requests on one keep-alive
# connection, a dump. Run from the repo root (needs valgrind, nginx, python3, openssl):
#
#   bash benches/profile.sh                 # N=2000, all four rows
#   ROWS="flood floor" N=1000 bash benches/profile.sh
#
# SKIP_BUILD=1 uses the binaries already in target/release (not after .ci/run: its wrapper
# builds the passthrough example at opt-level 0).
#
# Prints a table; OUT_MD (default benches/profile-results.md) gets the same in Markdown.
set -euo pipefail

N=${N:-2000} ROWS=${ROWS:-"flood floor valid pass"}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPL=$ROOT/benches/load
OUT_MD=${OUT_MD:-$ROOT/benches/profile-results.md}
AUTHGATE=${AUTHGATE:-$ROOT/target/release/authgate}
PASSTHROUGH=${PASSTHROUGH:-$ROOT/target/release/examples/passthrough}
ORG=a1b2c3d4-e5f6-7890-abcd-ef1234567890 OTHER_ORG=0f0f0f0f-0000-4000-8000-000000000002
CLIENT_IP=203.0.113.9 PROXY_THREADS=1
REQ_PATH=/partner/v1/orgs/$ORG/members
WORK=$(mktemp -d "${TMPDIR:-/tmp}/authgate-profile.XXXXXX")
declare -A PID=()

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'profile.sh: ERROR: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local p
  for p in "${PID[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# free_ports, render, render_nginx_conf
source "$ROOT/benches/lib.sh"

wait_status() { # url wanted-status
  local deadline=$((SECONDS + 120)) code
  until code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null) && [[ $code == "$2" ]]; do
    ((SECONDS < deadline)) || die "$1 did not answer $2 (last $code; logs in $WORK)"
    sleep 0.2
  done
}

setup() {
  for t in valgrind callgrind_control callgrind_annotate nginx python3 openssl curl; do
    command -v "$t" >/dev/null || die "$t is missing (apt-get install valgrind nginx python3 openssl curl)"
  done
  [[ ${SKIP_BUILD:-0} == 1 ]] || (cd "$ROOT" && cargo build --release --bin authgate --example passthrough)
  read -r UPSTREAM_PORT AG_PORT AG_ADMIN_PORT PASS_PORT DENY_PORT <<<"$(free_ports 5)"
  (cd "$WORK"
   openssl rand -hex 32 | tr -d '\n' >hs.secret
   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rs.key.pem 2>/dev/null
   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out es.key.pem 2>/dev/null
   for k in rs es; do openssl pkey -in $k.key.pem -pubout -out $k.pub.pem; done)
  cp "$ROOT/config/openapi/partner-api.yaml" "$WORK/partner-api.yaml"
  sed 's/operationId: /operationId: off_/' "$ROOT/config/openapi/partner-api.yaml" >"$WORK/partner-api-off.yaml"
  render_nginx_conf
  render authgate.toml.in "$WORK/authgate.toml" AG_PORT AG_ADMIN_PORT PROXY_THREADS UPSTREAM_PORT
  render partners.toml.in "$WORK/partners.toml" CLIENT_IP ORG OTHER_ORG
  nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf" >"$WORK/nginx.log" 2>&1 &
  PID[nginx]=$!
  wait_status "http://127.0.0.1:$UPSTREAM_PORT/" 200
  HS=$("$AUTHGATE" token --config "$WORK/authgate.toml" --partner bench --key-id key-bench-1 --kid bench-hs --ttl 1h)
}

# profile NAME PORT MODE EXPECT CMD...: runs CMD under callgrind and counts N requests.
profile() {
  local name=$1 port=$2 mode=$3 expect=$4 out=$WORK/cg-$1.out; shift 4
  say "$name: ${*##*/} under callgrind"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  local deadline=$((SECONDS + 300))
  until python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null; do
    ((SECONDS < deadline)) || die "$name never listened (log $WORK/$name.log)"
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited (log $WORK/$name.log)"
    sleep 0.5
  done
  sleep 1
  callgrind_control -i on "${PID[$name]}" >/dev/null
  python3 "$ROOT/benches/profile/client.py" --port "$port" --token "$HS" --path "$REQ_PATH" --mode "$mode" \
    --n $((N / 10)) --expect "$expect"
  callgrind_control -z "${PID[$name]}" >/dev/null
  python3 "$ROOT/benches/profile/client.py" --port "$port" --token "$HS" --path "$REQ_PATH" --mode "$mode" \
    --n "$N" --expect "$expect"
  sleep 0.2 # the log writer flushes every 20 ms
  callgrind_control -d "${PID[$name]}" >/dev/null
  kill -TERM "${PID[$name]}" 2>/dev/null || true
  wait "${PID[$name]}" 2>/dev/null || true
  unset "PID[$name]"
  local dump
  dump=$(ls -t "$out".* 2>/dev/null | head -1)
  [[ -n $dump ]] || die "$name: no callgrind dump"
  callgrind_annotate --inclusive=yes --threshold=100 "$dump" >"$WORK/annotate-$name.txt" 2>/dev/null
  callgrind_annotate --threshold=95 "$dump" >"$WORK/self-$name.txt" 2>/dev/null # exclusive, for digging
  printf '%s\t%s\n' "$name" "$dump" >>"$WORK/rows.tsv"
}

main() {
  cd "$ROOT"
  setup
  : >"$WORK/rows.tsv"
  for row in $ROWS; do
    case $row in
      flood) profile flood "$AG_PORT" flood 401 "$AUTHGATE" --config "$WORK/authgate.toml" ;;
      valid) profile valid "$AG_PORT" valid 200 "$AUTHGATE" --config "$WORK/authgate.toml" ;;
      floor) profile floor "$DENY_PORT" flood 401 "$PASSTHROUGH" --deny --listen "127.0.0.1:$DENY_PORT" \
        --upstream "127.0.0.1:$UPSTREAM_PORT" --threads 1 ;;
      pass) profile pass "$PASS_PORT" valid 200 "$PASSTHROUGH" --listen "127.0.0.1:$PASS_PORT" \
        --upstream "127.0.0.1:$UPSTREAM_PORT" --threads 1 ;;
      *) die "unknown row $row (flood floor valid pass)" ;;
    esac
  done
  python3 "$ROOT/benches/profile/report.py" "$WORK/rows.tsv" "$N" "$OUT_MD"
}

main "$@"
