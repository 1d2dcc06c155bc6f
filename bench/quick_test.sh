#!/usr/bin/env bash
# CI check that the benchmark harness still works: runs bench/run.py in
# quick mode against the real binaries (small N) and checks that every
# figure came out. It asserts nothing about speed.
#
# Args: run.py, make-sample-app.sh, then the six binaries.
set -euo pipefail
run_py=$1
sample_app=$2
shift 2
bin_dir="$TEST_TMPDIR/bin"
mkdir -p "$bin_dir"
for b in "$@"; do
  ln -sf "$(cd "$(dirname "$b")" && pwd)/$(basename "$b")" "$bin_dir/$(basename "$b")"
done

out="$TEST_TMPDIR/RESULTS.md"
python3 "$run_py" --mode quick --bin-dir "$bin_dir" --sample-app "$sample_app" \
  --out "$out" --work "$TEST_TMPDIR/work" --command "bench/quick_test"

python3 - "$out.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
figures, errors = report["figures"], report["errors"]
expected = ["connected", "connected_beyond", "fanout", "rollout_4_stage",
            "reconnect_storm", "artifact_serving", "verification",
            "telemetry_ingest", "telemetry_query", "agent_footprint",
            "swap_downtime"]
missing = [f for f in expected if f not in figures]
problems = [f"missing figure {f}" for f in missing]
problems += [f"{k}: {v}" for k, v in errors.items()]
if not missing:
    if len(figures["connected"]["steps"]) != 2:
        problems.append("connected: not every ramp step held")
    if figures["fanout"]["received"] != figures["fanout"]["agents"]:
        problems.append("fanout: not every agent got its directive")
    if "COMPLETED" not in figures["rollout_4_stage"]["state"]:
        problems.append("rollout_4_stage did not complete")
    if len(figures["artifact_serving"]["rows"]) != 2:
        problems.append("artifact_serving: a concurrency level is missing")
for p in problems:
    print("FAIL:", p)
if problems:
    sys.exit(1)
print("every figure present:", ", ".join(expected))
PY
