#!/usr/bin/env bash
# Fuzz smoke for CI: build every cargo-fuzz target once, run each for FUZZ_SECONDS
# (default 30) from a temporary copy of the committed corpus and regressions, and fail on
# any crash, timeout or out-of-memory, printing the input. Stable Rust is enough: with
# `--sanitizer none` cargo-fuzz passes only stable -C flags (see fuzz/README.md).
# Nothing is written into the repository except the build directory fuzz/target (ignored).
#
#   fuzz/ci.sh                       # from anywhere; FUZZ_SECONDS=300 fuzz/ci.sh for longer
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
targets=(jwt_verify xff path_route config_load journal openapi_validate)
cargo_fuzz_version=0.13.2
flags=(--sanitizer none)

step() { printf '\n==> %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# cargo fuzz has no --locked: check that fuzz/Cargo.lock is current before building
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null

step "building the fuzz targets (cargo fuzz build ${flags[*]})"
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "built in $(($(date +%s) - start)) s"

work=$(mktemp -d)
keep=0
cleanup() { if [ "$keep" -eq 0 ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

show() { # an input, as hex and as an escaped string
  local f=$1
  echo "--- $f ($(wc -c <"$f") bytes)"
  od -An -tx1 -v "$f" | head -n 64
  printf 'escaped: '
  head -c 2048 "$f" | od -An -c -v | tr -s ' \n' ' ' | head -c 4096
  echo
}

failed=()
for t in "${targets[@]}"; do
  step "fuzzing $t for ${seconds}s"
  corpus="$work/$t/corpus"
  artifacts="$work/$t/artifacts"
  mkdir -p "$corpus" "$artifacts"
  cp fuzz/corpus/"$t"/* fuzz/regressions/"$t"/* "$corpus"/
  set +e
  cargo fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$work/$t/log" 2>&1
  rc=$?
  set -e
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units|^stat::peak_rss_mb' "$work/$t/log" || true
  if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$artifacts")" ]; then
    failed+=("$t")
    keep=1
    echo "FAILED: $t (exit $rc):"
    grep -m 3 -A 2 -E 'panicked at|ERROR: libFuzzer' "$work/$t/log" || true
    echo "the end of its log:"
    grep -v '^#[0-9]' "$work/$t/log" | grep -v -E '^ +([0-9]+: | +at )' | tail -n 30
    for f in "$artifacts"/*; do
      [ -e "$f" ] || continue
      show "$f"
      echo "reproduce: cargo fuzz run ${flags[*]} $t $f"
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "fuzzing found problems in: ${failed[*]} (inputs and logs kept under $work)"
  echo "minimise with: cargo fuzz tmin ${flags[*]} <target> <input>; save it under fuzz/regressions/<target>/"
  exit 1
fi
echo
echo "fuzz smoke: ${targets[*]}: no crash, timeout or OOM in ${seconds}s each"
