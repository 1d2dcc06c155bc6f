#!/usr/bin/env bash
# Runs fleet's fuzz targets with libFuzzer for a bounded time each.
#
# Usage: tests/fuzz/run.sh [--seconds N] [--merge] [TARGET...]
#   TARGET   manifest, root, semver, selector, agent_message (default: all)
#   --seconds N  time per target (default 60)
#   --merge      afterwards, minimize what the run found into
#                tests/fuzz/corpus/TARGET (then commit it)
#
# Builds with clang (-fsanitize=fuzzer,address,undefined) in a Bazel output
# base of its own, so the workspace's gcc build cache is untouched. New
# inputs go to a temporary corpus seeded by tests/fuzz/corpus/TARGET. A
# crash leaves its input in the run directory; copy it into
# tests/fuzz/corpus/TARGET so the replay tests (bazel test //tests/fuzz/...)
# keep it fixed, then fix the code.
#
# Exit status: 0 no target crashed, 1 a target crashed, 2 setup failed.
set -euo pipefail

cd "$(dirname "$0")/../.."
all=(manifest root semver selector agent_message)
seconds=60
merge=0
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${all[@]}")

if ! command -v clang >/dev/null ||
  ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1; then
  echo "tests/fuzz/run.sh: needs clang with libFuzzer:" \
    "apt-get install clang libclang-rt-14-dev" >&2
  exit 2
fi

output_base="${FLEET_FUZZ_OUTPUT_BASE:-$HOME/.cache/fleet-fuzz-bazel}"
labels=()
for t in "${targets[@]}"; do labels+=("//tests/fuzz:${t}_fuzzer"); done
echo "building ${targets[*]} with clang + libFuzzer (output base $output_base)"
CC=clang CXX=clang++ bazel --output_base="$output_base" build -c opt \
  --copt=-g --copt=-fsanitize=fuzzer-no-link,address,undefined \
  --copt=-fno-sanitize-recover=undefined --copt=-fno-sanitize=vptr,function \
  --linkopt=-fsanitize=address,undefined \
  "${labels[@]}" >/dev/null 2>&1 || {
  echo "tests/fuzz/run.sh: build failed; rerun with:" >&2
  echo "  CC=clang bazel --output_base=$output_base build ${labels[*]}" >&2
  exit 2
}
bin="$(bazel --output_base="$output_base" info -c opt bazel-bin 2>/dev/null)"

run_dir="$(mktemp -d /tmp/fleet-fuzz.XXXXXX)"
status=0
printf '%-15s %12s %10s  %s\n' target execs corpus result
for t in "${targets[@]}"; do
  work="$run_dir/$t/corpus"
  mkdir -p "$work"
  log="$run_dir/$t/log"
  if "$bin/tests/fuzz/${t}_fuzzer" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$run_dir/$t/" "$work" "tests/fuzz/corpus/$t" \
    >"$log" 2>&1; then
    result=ok
  else
    result="CRASH: $(ls "$run_dir/$t"/crash-* "$run_dir/$t"/timeout-* \
      "$run_dir/$t"/oom-* 2>/dev/null | head -1) (log $log)"
    status=1
  fi
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  printf '%-15s %12s %10s  %s\n' "$t" "${execs:-?}" \
    "$(ls "$work" | wc -l)" "$result"
  if ((merge)) && [[ "$result" == ok ]]; then
    "$bin/tests/fuzz/${t}_fuzzer" -merge=1 "tests/fuzz/corpus/$t" "$work" \
      >"$run_dir/$t/merge.log" 2>&1
  fi
done
echo "run directory: $run_dir"
exit "$status"
