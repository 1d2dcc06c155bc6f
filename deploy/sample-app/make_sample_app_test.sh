#!/usr/bin/env bash
# Checks the contract of make-sample-app.sh: the program reports "VERSION PID"
# in its status file, exits 0 promptly on SIGTERM, needs a status path, and
# --crash makes a program that exits 1; versions differ in their digests.
set -euo pipefail

gen=${1:?usage: make_sample_app_test.sh PATH/TO/make-sample-app.sh}
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/sample-app.XXXXXX")
pid=''
cleanup() {
  if [[ -n "$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

sh "$gen" 1.0.0 "$work/app-1.0.0"
sh "$gen" 1.1.0 "$work/app-1.1.0"
sh "$gen" 1.1.0 "$work/bad-1.1.0" --crash
[[ -x "$work/app-1.0.0" ]] || fail "program is not executable"

digests=$(sha256sum "$work/app-1.0.0" "$work/app-1.1.0" "$work/bad-1.1.0" |
  cut -d' ' -f1 | sort -u | wc -l)
[[ "$digests" -eq 3 ]] || fail "expected 3 distinct digests, got $digests"

# Runs and reports itself.
FLEET_SAMPLE_STATUS="$work/status" "$work/app-1.1.0" &
pid=$!
for _ in $(seq 50); do
  [[ -s "$work/status" ]] && break
  sleep 0.1
done
[[ "$(cat "$work/status")" == "1.1.0 $pid" ]] ||
  fail "status is '$(cat "$work/status" 2>/dev/null)', want '1.1.0 $pid'"
ls "$work"/status.tmp.* >/dev/null 2>&1 && fail "temp status file left behind"
kill -0 "$pid" || fail "program exited on its own"

# Stops promptly and cleanly on SIGTERM.
start=$(date +%s%N)
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=''
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[[ "$rc" -eq 0 ]] || fail "exit status after SIGTERM is $rc, want 0"
(( elapsed_ms < 800 )) || fail "took ${elapsed_ms}ms to stop, want < 800ms"

# The first argument is the status path too.
"$work/app-1.0.0" "$work/status-arg" &
pid=$!
for _ in $(seq 50); do
  [[ -s "$work/status-arg" ]] && break
  sleep 0.1
done
[[ "$(cat "$work/status-arg")" == "1.0.0 $pid" ]] || fail "first-argument status path ignored"
kill -TERM "$pid"
wait "$pid" || true
pid=''

# Without a status path it refuses to run.
rc=0
env -u FLEET_SAMPLE_STATUS "$work/app-1.0.0" 2>/dev/null || rc=$?
[[ "$rc" -eq 2 ]] || fail "without a status path exit status is $rc, want 2"

# The bad release exits 1 at once and leaves the status alone.
echo "untouched" >"$work/status"
rc=0
FLEET_SAMPLE_STATUS="$work/status" "$work/bad-1.1.0" 2>/dev/null || rc=$?
[[ "$rc" -eq 1 ]] || fail "--crash program exit status is $rc, want 1"
[[ "$(cat "$work/status")" == "untouched" ]] || fail "--crash program wrote its status"

# Usage errors.
rc=0
sh "$gen" "1.0'x" "$work/evil" 2>/dev/null || rc=$?
[[ "$rc" -eq 2 && ! -e "$work/evil" ]] || fail "unsafe VERSION accepted"
rc=0
sh "$gen" 1.0.0 2>/dev/null || rc=$?
[[ "$rc" -eq 2 ]] || fail "missing OUT accepted"

echo "PASS"
