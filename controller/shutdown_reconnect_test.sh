#!/usr/bin/env bash
# A planned controller restart, with the real binaries: a controller and an
# agent run; the controller gets SIGTERM (what `systemctl restart` sends),
# exits 0 after ending the agent streams, and starts again on the same port
# and data dir. The agent must reconnect by itself (backoff with jitter),
# and neither process may log an error-level line: a planned restart is no
# alarm.
#
# Usage: shutdown_reconnect_test.sh CONTROLLER_BIN AGENT_BIN
set -euo pipefail

controller_bin=$1 agent_bin=$2
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/shutdown.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for log in "$tmp"/*.log; do echo "--- $log" >&2; cat "$log" >&2; done
  exit 1
}
# wait_for FILE PATTERN COUNT: until FILE has COUNT lines matching PATTERN.
wait_for() {
  for _ in $(seq 1 300); do
    if (($(grep -c -- "$2" "$1" 2>/dev/null || true) >= $3)); then return 0; fi
    sleep 0.1
  done
  fail "timed out waiting for $3 x \"$2\" in $1"
}

openssl genpkey -algorithm ed25519 -out "$tmp/release.key" 2>/dev/null
openssl pkey -in "$tmp/release.key" -pubout -out "$tmp/release.pub"

start_controller() {  # start_controller LISTEN LOG
  "$controller_bin" --data-dir "$tmp/data" --listen "$1" --http-listen "" \
    --trust-key "$tmp/release.pub" --insecure >/dev/null 2>"$2" &
  controller_pid=$!
  pids+=("$controller_pid")
}

start_controller 127.0.0.1:0 "$tmp/controller1.log"
wait_for "$tmp/controller1.log" '"msg":"listening"' 1
port=$(grep -o '"grpc_port":[0-9]*' "$tmp/controller1.log" | head -1 | cut -d: -f2)
[[ -n $port && $port != 0 ]] || fail "no grpc_port in the controller's log"

"$agent_bin" --controller "127.0.0.1:$port" --insecure --state-dir "$tmp/agent" \
  --trust-key "$tmp/release.pub" --product app --exec "$tmp/app/bin/app" \
  >/dev/null 2>"$tmp/agent.log" &
agent_pid=$!
pids+=("$agent_pid")
wait_for "$tmp/agent.log" '"msg":"connected to controller"' 1

# Planned shutdown.
kill -TERM "$controller_pid"
status=0
wait "$controller_pid" || status=$?
((status == 0)) || fail "controller exited $status on SIGTERM"
grep -q '"msg":"stopped"' "$tmp/controller1.log" || fail "controller did not log a clean stop"
wait_for "$tmp/agent.log" 'controller stream ended; reconnecting' 1
# The agent read the controller's own reason, not a cancellation of its own,
# and took it as routine (info, not a warning).
first_end=$(grep -m1 'controller stream ended' "$tmp/agent.log")
[[ "$first_end" == *UNAVAILABLE*"shutting down"* ]] ||
  fail "agent did not see UNAVAILABLE (shutting down): $first_end"
[[ "$first_end" == *'"level":"info"'* ]] ||
  fail "a planned shutdown was logged above info: $first_end"

# Down for a moment (the agent retries, and is refused, meanwhile), then up
# again where the agent looks for it.
sleep 1
start_controller "127.0.0.1:$port" "$tmp/controller2.log"
wait_for "$tmp/controller2.log" '"msg":"listening"' 1
wait_for "$tmp/agent.log" '"msg":"connected to controller"' 2
kill -0 "$agent_pid" 2>/dev/null || fail "the agent died"

kill -TERM "$agent_pid" "$controller_pid"
wait "$agent_pid" || fail "agent exited non-zero on SIGTERM"
wait "$controller_pid" || fail "controller exited non-zero on SIGTERM"
pids=()

for log in "$tmp"/agent.log "$tmp"/controller1.log "$tmp"/controller2.log; do
  if grep -q '"level":"error"' "$log"; then
    fail "error-level line in $log during a planned restart"
  fi
done
echo "agent reconnected after a planned controller restart; no error logged"
