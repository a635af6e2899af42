#!/usr/bin/env bash
# Fuzzes wsbridge's pure parsers with cargo-fuzz (libFuzzer): the output line framer, the
# lenprefix decoder, the origin policy, the CGI environment, percent-decoding and the
# permessage-deflate negotiation (targets
# in fuzz/fuzz_targets/).
#
#   tools/fuzz.sh [SECONDS]     # total fuzzing budget, default 60, split evenly over targets
#
# For each target it first replays the committed seeds (fuzz/corpus/TARGET, `-runs=0`),
# then fuzzes for its share of the budget. New corpus entries go to fuzz/target/corpus/
# (never into the committed seeds); crash, leak and timeout inputs go to
# fuzz/artifacts/TARGET/ and are minimized (bounded) with `cargo fuzz tmin`. Exits non-zero
# if any target crashed or failed to build.
#
# Toolchain: nightly when `rustup run nightly rustc -V` works (AddressSanitizer, the
# cargo-fuzz default there); otherwise stable with `-s none` (cargo-fuzz then passes only
# stable flags: SanitizerCoverage via -Cpasses/-Cllvm-args). Set FUZZ_TOOLCHAIN=stable to
# force the stable path. cargo-fuzz is installed with `cargo install cargo-fuzz --locked`
# when missing; if that fails, the same invariants are checked by the proptest suite
# (`cargo test --test it properties::`) instead, and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-60}
if ! [[ $budget =~ ^[0-9]+$ ]]; then
  echo "usage: tools/fuzz.sh [SECONDS]" >&2
  exit 2
fi
targets=(line_framer lenprefix origin env_build percent_decode route deflate_offer)
per=$((budget / ${#targets[@]}))
((per >= 1)) || per=1
say() { echo "tools/fuzz.sh: $*"; }
# The lines of a libFuzzer log that say what went wrong (panic message, sanitizer report).
why() {
  if grep -q 'failed to build fuzz script' "$1"; then
    grep -m5 -E '^error' "$1" || true
    return
  fi
  grep -m2 -A4 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|^SUMMARY:' "$1" || tail -n 20 "$1"
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "cargo-fuzz not found; running: cargo install cargo-fuzz --locked"
  if ! timeout 1800 cargo install cargo-fuzz --locked; then
    say "could not install cargo-fuzz; checking the same invariants with the proptest suite instead"
    say "running: cargo test --test it properties::"
    exec timeout 1800 cargo test --test it properties::
  fi
fi

if [[ ${FUZZ_TOOLCHAIN:-} != stable ]] && rustup run nightly rustc -V >/dev/null 2>&1; then
  cargo_fuzz=(cargo +nightly fuzz)
  san=()
  mode="nightly ($(rustup run nightly rustc -V)), AddressSanitizer"
else
  cargo_fuzz=(cargo fuzz)
  san=(-s none)
  mode="stable ($(rustc -V)), no sanitizer (-s none)"
fi
say "$(cargo fuzz --version); toolchain: $mode; ${per}s per target: ${targets[*]}"

logs=fuzz/target/logs
mkdir -p "$logs"
say "building all targets: $(echo "${cargo_fuzz[*]} build ${san[*]} --fuzz-dir fuzz" | tr -s ' ')"
if ! timeout 1800 "${cargo_fuzz[@]}" build "${san[@]}" --fuzz-dir fuzz; then
  say "FAILED to build the fuzz targets"
  exit 1
fi

failed=()
summary=()
# Prints the newest artifact of a target written after the marker file, if any.
new_artifact() {
  find "fuzz/artifacts/$1" -type f -newer "$2" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-
}
minimize() {
  local t=$1 artifact=$2
  say "$t: minimizing $artifact (at most 30 s)"
  timeout --kill-after=10 60 "${cargo_fuzz[@]}" tmin "${san[@]}" --fuzz-dir fuzz -r 2000 "$t" "$artifact" \
    -- -max_total_time=30 >"$logs/$t.tmin.log" 2>&1 || true
  local min
  min=$(find "fuzz/artifacts/$t" -name 'minimized-from-*' -newer "$artifact" -printf '%T@ %p\n' 2>/dev/null |
    sort -n | tail -1 | cut -d' ' -f2-)
  if [[ -z $min ]]; then
    say "$t: could not minimize further; the input as found:"
    min=$artifact
  fi
  say "$t: input $min ($(stat -c %s "$min") bytes):"
  od -An -tx1 -c "$min" | head -n 20
  grep -A3 'panicked at' "$logs/$t.tmin.log" | tail -n 4 || true
}

for t in "${targets[@]}"; do
  mkdir -p "fuzz/target/corpus/$t" "fuzz/artifacts/$t"
  marker=$(mktemp)

  say "$t: replaying committed seeds (fuzz/corpus/$t)"
  if ! timeout --kill-after=10 300 "${cargo_fuzz[@]}" run "${san[@]}" --fuzz-dir fuzz "$t" "fuzz/corpus/$t" \
    -- -runs=0 >"$logs/$t.replay.log" 2>&1; then
    if grep -q 'failed to build fuzz script' "$logs/$t.replay.log"; then
      grep -m5 -E '^error' "$logs/$t.replay.log" || true
      say "$t: BUILD FAILED (src/ changed since the build above?) (log: $logs/$t.replay.log)"
      failed+=("$t (build)")
      summary+=("$t: build FAILED")
      rm -f "$marker"
      continue
    fi
    why "$logs/$t.replay.log"
    say "$t: CRASH while replaying the committed seeds (log: $logs/$t.replay.log)"
    failed+=("$t (seed replay)")
    summary+=("$t: seed replay FAILED")
    artifact=$(new_artifact "$t" "$marker")
    [[ -n $artifact ]] && minimize "$t" "$artifact"
    rm -f "$marker"
    continue
  fi

  say "$t: fuzzing for ${per}s: $(echo "${cargo_fuzz[*]} run ${san[*]} --fuzz-dir fuzz $t fuzz/target/corpus/$t fuzz/corpus/$t -- -max_total_time=$per" | tr -s ' ')"
  start=$(date +%s)
  status=0
  timeout --kill-after=10 $((per + 300)) "${cargo_fuzz[@]}" run "${san[@]}" --fuzz-dir fuzz "$t" \
    "fuzz/target/corpus/$t" "fuzz/corpus/$t" \
    -- -max_total_time="$per" -timeout=10 -print_final_stats=1 >"$logs/$t.log" 2>&1 || status=$?
  secs=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
  line="$t: ${secs}s wall, ${runs:-?} execs, ${rate:-?} exec/s, corpus $(ls "fuzz/target/corpus/$t" | wc -l) entries"
  if ((status != 0)); then
    why "$logs/$t.log"
    say "$t: CRASH or error, exit status $status (log: $logs/$t.log)"
    failed+=("$t")
    summary+=("$line: FAILED (exit $status)")
    artifact=$(new_artifact "$t" "$marker")
    [[ -n $artifact ]] && minimize "$t" "$artifact"
  else
    summary+=("$line: ok")
  fi
  rm -f "$marker"
done

say "summary ($mode):"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  say "FAILED: ${failed[*]}; inputs under fuzz/artifacts/, reproduce with:"
  say "  $(echo "${cargo_fuzz[*]} run ${san[*]} --fuzz-dir fuzz TARGET fuzz/artifacts/TARGET/FILE" | tr -s ' ')"
  exit 1
fi
say "no crashes"
