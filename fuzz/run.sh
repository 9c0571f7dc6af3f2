#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other,
# starting from the seeds in fuzz/seeds/TARGET and the corpus kept in
# fuzz/corpus/TARGET, and prints for each its executions and result.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on the stable
# toolchain (RUSTC_BOOTSTRAP=1). FUZZ_SANITIZER picks cargo-fuzz's sanitizer
# (default none: the targets are safe Rust, and overflow checks and debug
# assertions are on either way). A crash leaves its input in
# fuzz/artifacts/TARGET/ and makes the script fail; turn it into a unit test.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=(http_head reference range conf build_output)
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

cargo fuzz build --sanitizer "$sanitizer" || exit 1
failed=0
results=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" fuzz/artifacts
  log="fuzz/artifacts/$target.log"
  cargo fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
  status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    result="no crash"
  else
    result="FAILED (exit $status, see $log)"
    failed=1
  fi
  results+=("$(printf '%-11s %12s executions in %ss, corpus %5s inputs: %s' "$target" "${runs:-?}" "$seconds" "$corpus" "$result")")
done
printf '%s\n' "${results[@]}"
exit "$failed"
