#!/usr/bin/env bash
# Fuzz smoke for CI: build every cargo-fuzz target once, run each for FUZZ_SECONDS
# (default 30) from a temporary copy of the committed corpus and regressions, and fail on
# any crash, timeout or out-of-memory, printing the input. Stable Rust is enough: the build
# passes only the stable -C flags of `cargo fuzz build --sanitizer none` (fuzz/README.md),
# and needs no cargo-fuzz. Nothing is written into the repository except target/ (ignored).
#
#   fuzz/ci.sh                       # build, then run; FUZZ_SECONDS=300 fuzz/ci.sh for longer
#   fuzz/ci.sh build                 # only build (.ci/run builds while the tests run)
#   fuzz/ci.sh run                   # only run what `build` built
#
# FUZZ_JOBS targets run at once (default: one per CPU; each libFuzzer process is one thread,
# so two at once on two cores give each target the same CPU time as one after the other).
set -euo pipefail
cd "$(dirname "$0")/.."

phase=${1:-all}
case $phase in
build | run | all) ;;
*)
  echo "usage: fuzz/ci.sh [build|run|all]" >&2
  exit 2
  ;;
esac
seconds=${FUZZ_SECONDS:-30}
jobs_max=${FUZZ_JOBS:-$(nproc)}
targets=(jwt_verify xff path_route config_load journal openapi_validate)
flags=(--sanitizer none)

step() { printf '\n==> %s\n' "$*"; }

# CI's build (not `cargo fuzz build`, which instruments every crate and builds them all
# again in fuzz/target): the targets go into the main target/, where the main release build
# already holds every dependency with the same features (the `main-build-deps` feature of
# fuzz/Cargo.toml), so only authgate and the targets compile. fuzz/instrument gives those
# two cargo-fuzz's coverage flags; the package overrides below give them opt-level 1 (at 0
# the targets ran 2-8x fewer executions per second) and debug assertions and overflow
# checks, as `cargo fuzz build` does. Dependencies are not instrumented:
# libFuzzer steers by coverage of authgate's own code (longer campaigns: fuzz/README.md).
profile=()
for pkg in authgate authgate-fuzz; do
  profile+=(--config "profile.release.package.$pkg.opt-level=1"
    --config "profile.release.package.$pkg.debug-assertions=true"
    --config "profile.release.package.$pkg.overflow-checks=true")
done

build() {
  step "building the fuzz targets into target/ (authgate and the targets instrumented)"
  start=$(date +%s)
  local log
  log=$(mktemp)
  RUSTC_WRAPPER="$PWD/fuzz/instrument" CARGO_TARGET_DIR="$PWD/target" \
    cargo build --manifest-path fuzz/Cargo.toml --release --locked --bins \
    --features main-build-deps "${profile[@]}" 2>&1 | tee "$log"
  echo "built in $(($(date +%s) - start)) s"
  # anything compiled besides authgate, the targets and libFuzzer means the graphs drifted
  # apart: say so (it costs CI minutes, not correctness)
  local extra
  extra=$(sed -n 's/^ *Compiling \([^ ]*\) .*/\1/p' "$log" |
    grep -v -x -E 'authgate|authgate-fuzz|libfuzzer-sys|arbitrary' || true)
  if [ -n "$extra" ]; then
    echo "note: compiled again for the fuzz build (features differ from the main build's):" $extra
  fi
  rm -f "$log"
}

if [ "$phase" != run ]; then
  build
fi
if [ "$phase" = build ]; then
  exit 0
fi

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

# what `build` made, run directly
bin_dir=target/release

fuzz_one() { # runs one target; its log and exit status go under $work/<target>
  local t=$1
  local corpus="$work/$t/corpus" artifacts="$work/$t/artifacts"
  set +e
  "$bin_dir/$t" "$corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$work/$t/log" 2>&1
  echo $? >"$work/$t/rc"
}

step "fuzzing ${targets[*]} for ${seconds}s each, $jobs_max at a time"
for t in "${targets[@]}"; do
  if [ ! -x "$bin_dir/$t" ]; then
    echo "no $bin_dir/$t: run fuzz/ci.sh build first" >&2
    exit 1
  fi
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp fuzz/corpus/"$t"/* fuzz/regressions/"$t"/* "$work/$t/corpus"/
done
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
    wait -n || true
  done
  fuzz_one "$t" &
done
wait

failed=()
for t in "${targets[@]}"; do
  artifacts="$work/$t/artifacts"
  rc=$(cat "$work/$t/rc")
  step "$t (exit $rc)"
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
      echo "reproduce: $bin_dir/$t $f   (or: cargo fuzz run ${flags[*]} $t $f)"
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
