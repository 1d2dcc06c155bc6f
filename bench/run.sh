#!/usr/bin/env bash
# Runs every benchmark figure of issue #7 on this machine and writes
# bench/RESULTS.md (command, machine, date, commit, each figure beside its
# peer or limit as a ratio).
#
# Usage: bench/run.sh [quick|full]      (default quick)
#   quick: small N, about a minute; writes bench/RESULTS-quick.md
#   full:  10k agents, 200 MiB artifact, 10M events; ~25 minutes; writes
#          bench/RESULTS.md
#   OUT=path overrides the report; ONLY=fleet,artifact,verify,telemetry,query,agent
#   (or rollout: fan-out and 4-stage only, without the ramp and the storm)
#   runs a subset; KEEP=1 keeps the scratch dir.
#
# Builds the real binaries with `bazel build -c opt` first and copies them
# aside, so a rebuild in the same workspace cannot swap a binary mid-run.
# Every process the harness starts (controller, agents, simulator, nginx) is
# ended on exit, failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-quick}
case "$mode" in
  quick) out=${OUT:-bench/RESULTS-quick.md} ;;
  full) out=${OUT:-bench/RESULTS.md} ;;
  *)
    echo "usage: bench/run.sh [quick|full]  (unknown mode \"$mode\")" >&2
    exit 2
    ;;
esac

targets=(//controller:fleet-controller //agent:fleet-agent //cli:fleetctl
  //bench:agent_simulator //bench:fetch_bench //bench:verify_bench)
bazel build -c opt "${targets[@]}" --curses=no --show_progress_rate_limit=30 2>&1 | tail -2
# bazel-out/k8-opt is where -c opt puts its outputs on x86_64 Linux; asking
# `bazel info` instead would queue behind every other command on the shared
# workspace.
bin=bazel-out/k8-opt/bin
if [[ ! -x "$bin/controller/fleet-controller" ]]; then
  bin=$(bazel info -c opt bazel-bin 2>/dev/null)
fi

bin_dir=$(mktemp -d /tmp/fleet-bench-bin.XXXXXX)
trap 'rm -rf "$bin_dir"' EXIT
cp "$bin/controller/fleet-controller" "$bin/agent/fleet-agent" \
  "$bin/cli/fleetctl" "$bin/bench/agent_simulator" "$bin/bench/fetch_bench" \
  "$bin/bench/verify_bench" "$bin_dir/"

commit=$(git rev-parse --short HEAD)
if ! git diff --quiet HEAD -- controller agent cli common proto bench; then
  commit="$commit (+ uncommitted changes in the tree)"
fi

only=()
if [[ -n "${ONLY:-}" ]]; then only=(--only "$ONLY"); fi

python3 bench/run.py --mode "$mode" --bin-dir "$bin_dir" \
  --sample-app deploy/sample-app/make-sample-app.sh --out "$out" \
  --commit "$commit" --command "bench/run.sh $mode" \
  --notes bench/NOTES.md "${only[@]}"
echo "wrote $out"
