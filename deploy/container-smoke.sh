#!/usr/bin/env bash
# Container smoke test: builds the Dockerfile's runtime stage on a Debian bookworm base made
# here from Debian's own packages (no registry needed), with the release binary CI already
# built, and runs it: `authgate check` on the image's config, the gateway as the image's user
# (uid 10001) with the demo upstream beside it, a 200 and a 401 through it, a learned org
# journalled on the volume by uid 10001, `authgate health` exit 0, an image under 120 MB.
#
# The Dockerfile's build stage is not run (that would compile authgate a second time): it is
# checked instead. Every path it COPYs exists, it runs `cargo build --release --locked`,
# every source file the release build of authgate read (rustc's dep-info,
# target/release/authgate.d) is inside what it copies, and cargo resolves the crate, lock
# file included, from exactly those files.
#
#   cargo build --release --locked && sudo deploy/container-smoke.sh
#   sudo deploy/container-smoke.sh --make-base FILE   # only the base (CI: in the background)
#   sudo deploy/container-smoke.sh --base FILE        # with a base made that way
#
# Needs root (mmdebstrap and buildah's chroot isolation), mmdebstrap, buildah, unshare,
# ip, curl and strip; the Debian base comes from the apt sources this machine is configured
# with (AUTHGATE_SMOKE_SOURCES: other sources.list files, space-separated). Everything lives
# in one temp dir (its own image store, a private network and PID namespace for the run),
# removed at exit. Exit 0: PASS; 1: a check failed; 2: something it needs is missing.
set -euo pipefail

readonly MAX_IMAGE_MB=120
readonly UID_EXPECTED=10001

fail() {
  echo "container smoke: FAIL: $*" >&2
  exit 1
}
missing() {
  echo "container smoke: cannot run: $*" >&2
  exit 2
}
phase() { printf 'container smoke: %s (%ds)\n' "$*" "$SECONDS"; }

# ------------------------------------------------------------------------------------------
# Inside the private network and PID namespace: run the image (see run_image below).
# ------------------------------------------------------------------------------------------
if [ "${SMOKE_INSIDE:-}" = 1 ]; then
  B=(buildah --root "$SMOKE_WORK/storage" --runroot "$SMOKE_WORK/run" --storage-driver vfs)
  config=/etc/authgate/authgate.toml
  ip link set lo up || fail "cannot bring up loopback in the private network namespace"
  ctr=$("${B[@]}" from -q "$SMOKE_IMAGE")
  in_image() { "${B[@]}" run --isolation chroot "$ctr" -- "$@"; }
  with_secret() { "${B[@]}" run --isolation chroot --env "AUTHGATE_DEV_SECRET=$SMOKE_SECRET" "$ctr" -- "$@"; }

  out=$(with_secret /usr/local/bin/authgate check --config "$config" 2>&1) ||
    fail "authgate check on the image's config: $out"
  [ "$out" = ok ] || fail "authgate check printed: $out"
  set +e
  out=$(in_image /usr/local/bin/authgate --config "$config" 2>&1)
  rc=$?
  set -e
  [ "$rc" -ne 0 ] && grep -q AUTHGATE_DEV_SECRET <<<"$out" ||
    fail "without AUTHGATE_DEV_SECRET the gateway must exit non-zero naming it (exit $rc): $out"
  user=$(in_image id -u)
  [ "$user" = "$UID_EXPECTED" ] || fail "the image runs as uid $user, not $UID_EXPECTED"

  # the image's own ENTRYPOINT + CMD, as `docker run` would start it
  read -r -a entry <<<"$("${B[@]}" inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}{{range .OCIv1.Config.Cmd}}{{.}} {{end}}' "$SMOKE_IMAGE")"
  with_secret /usr/local/bin/authgate demo --upstream-only --config "$config" >"$SMOKE_WORK/upstream.log" 2>&1 &
  upstream=$!
  with_secret "${entry[@]}" >"$SMOKE_WORK/gateway.log" 2>&1 &
  gateway=$!
  stop() {
    kill -TERM "$gateway" "$upstream" 2>/dev/null || true
    wait "$gateway" "$upstream" 2>/dev/null || true
  }
  trap stop EXIT
  # readiness is polled with a deadline: the gateway reports it on /readyz
  for _ in $(seq 300); do
    curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:9090/readyz 2>/dev/null && break
    kill -0 "$gateway" 2>/dev/null || fail "the gateway exited: $(tail -n 20 "$SMOKE_WORK/gateway.log")"
    sleep 0.2
  done
  curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:9090/readyz ||
    fail "/readyz is not 200 after 60 s: $(tail -n 20 "$SMOKE_WORK/gateway.log")"

  token=$(with_secret /usr/local/bin/authgate token --config "$config" --partner acme --key-id key-acme-1 --kid dev-hs)
  status() { curl -s -o "$SMOKE_WORK/body" -w '%{http_code}' --max-time 10 "$@"; }
  base=http://127.0.0.1:8080/partner/v1/orgs
  got=$(status -X POST "$base" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"name":"Smoke Tours","external_id":"container-smoke-1"}')
  [ "$got" = 201 ] || fail "POST $base with a valid token: $got $(cat "$SMOKE_WORK/body")"
  got=$(status "$base" -H "Authorization: Bearer $token")
  [ "$got" = 200 ] || fail "GET $base with a valid token: $got $(cat "$SMOKE_WORK/body")"
  grep -q container-smoke-1 "$SMOKE_WORK/body" || fail "the demo upstream did not list the org: $(cat "$SMOKE_WORK/body")"
  got=$(status "$base")
  [ "$got" = 401 ] || fail "GET $base without a token: $got, not 401"
  grep -q '"statusCode":401' "$SMOKE_WORK/body" || fail "the 401 is not the JSON error: $(cat "$SMOKE_WORK/body")"
  owner=$(in_image stat -c %u /var/lib/authgate/learned-orgs.jsonl) ||
    fail "the gateway did not journal the learned org on the volume"
  [ "$owner" = "$UID_EXPECTED" ] || fail "the journal on the volume belongs to uid $owner: the gateway did not run as $UID_EXPECTED"
  in_image /usr/local/bin/authgate health || fail "authgate health exited $?"
  exit 0
fi

# ------------------------------------------------------------------------------------------
# Outside: preflight, the build stage's check, the base, the image, its size; then the run.
# ------------------------------------------------------------------------------------------

# Every tool the given steps need, and root; exits 2 naming what is missing.
preflight() {
  local need=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || need+=("$tool")
  done
  [ ${#need[@]} -eq 0 ] ||
    missing "not on PATH: ${need[*]} (Debian packages: mmdebstrap buildah util-linux iproute2 curl binutils; cargo and rustc from rustup)"
  [ "$(id -u)" -eq 0 ] || missing "needs root: mmdebstrap builds the base as root and buildah runs the image with chroot isolation"
}

# The Dockerfile's build stage, checked without compiling: it runs cargo build --release
# --locked, every path it COPYs exists, the files the release build read (rustc's dep-info)
# are inside them, and cargo resolves the crate from exactly those files.
check_build_stage() {
  [ -x target/release/authgate ] || missing "no target/release/authgate: run cargo build --release --locked first"
  [ -f target/release/authgate.d ] || missing "no target/release/authgate.d (rustc's dep-info): run cargo build --release --locked first"
  # the lines from `FROM ... AS build` to the next FROM, continuations joined
  local build_stage
  build_stage=$(awk '
    /^FROM / { inside = ($NF == "build") }
    inside { line = line $0; if (sub(/\\$/, "", line)) next; print line; line = "" }
  ' Dockerfile)
  [ -n "$build_stage" ] || fail "the Dockerfile has no stage named build"
  grep -q '^RUN .*cargo build --release --locked' <<<"$build_stage" ||
    fail "the Dockerfile's build stage does not run cargo build --release --locked"
  local copied=() args parts src
  while read -r _ args; do
    read -r -a parts <<<"$args"
    for src in "${parts[@]:0:${#parts[@]}-1}"; do
      [ -e "$src" ] || fail "the Dockerfile's build stage copies $src, which does not exist"
      copied+=("${src%/}")
    done
  done < <(grep '^COPY ' <<<"$build_stage" | grep -v -- '--from=')
  # rustc's dep-info: "target/release/authgate: <every source file of the crate and the binary>"
  local deps dep_files f c inside
  deps=$(head -n 1 target/release/authgate.d)
  [ "${deps%%: *}" = "$root/target/release/authgate" ] ||
    missing "target/release/authgate.d is not this checkout's build (${deps%%: *}): run cargo build --release --locked"
  read -r -a dep_files <<<"${deps#*: }"
  for f in "${dep_files[@]}"; do
    case "$f" in
    "$root"/target/*) continue ;; # generated by a build script: made inside the build stage too
    "$root"/*) ;;
    *) continue ;; # the registry's sources: cargo fetches them there
    esac
    inside=""
    for c in "${copied[@]}"; do
      if [ "${f#"$root"/}" = "$c" ] || [ "${f#"$root/$c"/}" != "$f" ]; then inside=1; fi
    done
    [ -n "$inside" ] || fail "the release build reads ${f#"$root"/}, which the Dockerfile's build stage does not copy"
  done
  mkdir "$work/build-context"
  cp -r "${copied[@]}" "$work/build-context/"
  # `cargo fetch` parses the manifest as `cargo build` does (every declared target's file must
  # be there; `cargo metadata` skips a missing one) and checks the lock file, compiling nothing.
  local host
  host=$(rustc -vV | sed -n 's/^host: //p')
  (cd "$work/build-context" && cargo fetch --offline --locked --target "$host" 2>"$work/fetch.err") ||
    fail "cargo cannot resolve the crate from the files the build stage copies: $(cat "$work/fetch.err")"
  phase "build stage checked: it copies ${copied[*]}, which hold all ${#dep_files[@]} files the release build reads"
}

# A Debian bookworm base from Debian's packages into the tar $1: mmdebstrap's minbase variant
# (Essential packages and apt), merged /usr, without manual pages, translations or documentation,
# from the apt sources this machine is configured with (or AUTHGATE_SMOKE_SOURCES).
make_base() {
  local out=$1 sources=${AUTHGATE_SMOKE_SOURCES:-} list parts f
  if [ -z "$sources" ]; then
    eval "$(apt-config shell list Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d)"
    [ -n "$(grep -v '^\s*\(#\|$\)' "$list" 2>/dev/null)" ] && sources=$list
    for f in "$parts"*.sources "$parts"*.list; do
      [ -f "$f" ] && sources="$sources $f"
    done
  fi
  [ -n "${sources// /}" ] || missing "no apt sources configured (set AUTHGATE_SMOKE_SOURCES to a sources.list file)"
  # shellcheck disable=SC2086 # one argument per sources file
  mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    bookworm "$out" $sources 2>"$out.err" ||
    fail "mmdebstrap could not make the bookworm base from$sources: $(tail -n 20 "$out.err")"
  rm -f "$out.err"
  phase "base made with mmdebstrap ($(du -m "$out" | cut -f1) MB tar, from$sources)"
}

# The runtime stage, exactly as the Dockerfile writes it, on the base tar $1, with the
# release binary (stripped, as the build stage strips it) in place of the build stage's;
# sets $image and $size.
build_image() {
  local tag base_image ctr ctx amount unit mb
  tag=$(basename "$work" | tr '[:upper:]' '[:lower:]')
  base_image="localhost/authgate-smoke-base:$tag"
  ctr=$("${B[@]}" from -q scratch)
  "${B[@]}" add -q "$ctr" "$1" / >/dev/null
  "${B[@]}" commit -q --rm "$ctr" "$base_image" >/dev/null
  ctx="$work/context"
  mkdir -p "$ctx/prebuilt"
  cp Dockerfile "$ctx/"
  cp -r config "$ctx/"
  strip -o "$ctx/prebuilt/authgate" target/release/authgate
  image="localhost/authgate-smoke:$tag"
  "${B[@]}" bud --quiet --format docker --isolation chroot --target runtime \
    --build-arg "RUNTIME_IMAGE=$base_image" --build-arg BINARY_STAGE=prebuilt \
    -t "$image" "$ctx" >"$work/bud.log" 2>&1 || fail "buildah bud: $(tail -n 20 "$work/bud.log")"
  size=$("${B[@]}" images --noheading --format '{{.Size}}' "$image")
  read -r amount unit <<<"$size"
  case "$unit" in
  kB) mb=0 ;;
  MB) mb=${amount%.*} ;;
  *) fail "the image is $size: over $MAX_IMAGE_MB MB" ;;
  esac
  [ "$mb" -lt "$MAX_IMAGE_MB" ] || fail "the image is $size: over $MAX_IMAGE_MB MB"
  "${B[@]}" inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$image" | grep -q 'authgate health' ||
    fail "the image lost its HEALTHCHECK (authgate health)"
  phase "runtime image built: $size"
}

cd "$(dirname "$0")/.."
root=$(pwd)
base_tar=""
case "${1:-}" in
--make-base)
  # only the base, into $2: CI makes it in the background while it builds (mostly download)
  [ -n "${2:-}" ] || missing "--make-base needs the tar file to write"
  preflight mmdebstrap
  make_base "$2"
  exit 0
  ;;
--base)
  [ -f "${2:-}" ] || missing "--base needs a base tar made with --make-base (got '${2:-}')"
  base_tar=$2
  ;;
"") ;;
*) missing "usage: deploy/container-smoke.sh [--make-base FILE | --base FILE]" ;;
esac

preflight mmdebstrap buildah unshare ip curl strip cargo rustc
work=$(mktemp -d "${TMPDIR:-/tmp}/authgate-smoke.XXXXXX")
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
cleanup() {
  "${B[@]}" rm --all >/dev/null 2>&1 || true
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

check_build_stage
if [ -z "$base_tar" ]; then
  base_tar="$work/base.tar"
  make_base "$base_tar"
fi
build_image "$base_tar"
SMOKE_INSIDE=1 SMOKE_WORK="$work" SMOKE_IMAGE="$image" SMOKE_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n') \
  unshare --net --pid --fork --kill-child bash "$root/deploy/container-smoke.sh" ||
  { echo "--- gateway log" >&2; tail -n 20 "$work/gateway.log" >&2 2>/dev/null || true; exit 1; }
phase "PASS: image $size; check ok, uid $UID_EXPECTED, 201/200/401 through the gateway, journal on the volume, health 0"
