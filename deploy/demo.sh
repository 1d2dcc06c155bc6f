#!/usr/bin/env bash
# The fleet demo: one controller, three agents, two releases, two rollouts.
#
# Sets up the machine (deploy/setup.sh), builds the three binaries, creates a
# fleet CA (fleetctl pki init), starts a fleet-controller on 127.0.0.1 with
# mutual TLS and its SQLite database in a temporary data dir, starts three
# fleet-agents that enroll with a one-time token and each manage a small
# sample program, pushes signed releases 1.0.0 and 1.1.0 with fleetctl,
# installs 1.0.0 and rolls 1.1.0 out in three stages, and shows the rollout,
# the agents and the audit log. Everything is stopped on exit.
#
# Usage: deploy/demo.sh            (KEEP=1 keeps the temp dir for a look)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

deploy/setup.sh

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Building fleet-controller, fleet-agent and fleetctl"
bazel build -c opt //controller:fleet-controller //agent:fleet-agent //cli:fleetctl \
  --curses=no --show_progress_rate_limit=10 2>&1 | tail -3
bin=$(bazel info -c opt bazel-bin 2>/dev/null)
controller_bin="$bin/controller/fleet-controller"
agent_bin="$bin/agent/fleet-agent"
fleetctl_bin="$bin/cli/fleetctl"

demo=$(mktemp -d /tmp/fleet-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${KEEP:-0}" == "1" ]]; then
    echo "kept $demo"
  else
    rm -rf "$demo"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
grpc_port=$(free_port)
http_port=$(free_port)
export FLEET_CONTROLLER="127.0.0.1:$grpc_port"
fleetctl() { "$fleetctl_bin" "$@"; }

say "Generating a release signing key (the private key stays with the operator)"
fleetctl keys generate --out "$demo/keys"

say "Creating the fleet CA, the controller's certificate and an operator's"
fleetctl pki init --out "$demo/pki" --host 127.0.0.1 --host localhost \
  --admin demo-operator
# fleetctl reads ca.crt, admin.crt and admin.key from here.
export FLEET_PKI="$demo/pki"

say "Starting fleet-controller on $FLEET_CONTROLLER (mutual TLS; data in $demo/controller)"
"$controller_bin" --data-dir "$demo/controller" --listen "$FLEET_CONTROLLER" \
  --http-listen "127.0.0.1:$http_port" --trust-key "$demo/keys/release.pub" \
  --pki "$demo/pki" >"$demo/controller.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  fleetctl release list >/dev/null 2>&1 && break
  sleep 0.1
done

say "Building sample programs 1.0.0 and 1.1.0"
sh deploy/sample-app/make-sample-app.sh 1.0.0 "$demo/app-1.0.0"
sh deploy/sample-app/make-sample-app.sh 1.1.0 "$demo/app-1.1.0"

say "Pushing release app 1.0.0"
fleetctl release push --product app --version 1.0.0 --file "$demo/app-1.0.0" \
  --key "$demo/keys/release.key"

say "Creating a one-time enrollment token for three agents"
token=$(fleetctl enroll-token create --uses 3 --ttl 10m 2>/dev/null)
fleetctl enroll-token list

say "Starting three agents: each enrolls with the token, then uses its own certificate"
for i in 1 2 3; do
  mkdir -p "$demo/agent-$i/bin"
  FLEET_SAMPLE_STATUS="$demo/agent-$i/status" "$agent_bin" \
    --controller "$FLEET_CONTROLLER" --state-dir "$demo/agent-$i/state" \
    --tls-ca "$demo/pki/ca.crt" --enroll-token "$token" \
    --trust-key "$demo/keys/release.pub" --product app \
    --exec "$demo/agent-$i/bin/app" --label "region=demo" \
    --health-seconds 2 >"$demo/agent-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  connected=$(fleetctl -o json agents list | python3 -c \
    'import json,sys; print(sum(1 for a in json.load(sys.stdin).get("agents",[]) if a.get("connected")))')
  [[ "$connected" == 3 ]] && break
  sleep 0.2
done
fleetctl agents list

wait_rollout() {
  local id=$1 state=""
  for _ in $(seq 300); do
    state=$(fleetctl -o json rollout status "$id" |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("state",""))')
    case "$state" in
      *COMPLETED*|*ABORTED*) break ;;
    esac
    sleep 0.5
  done
  fleetctl rollout status "$id"
}

# rollout VERSION [FLAGS...]: creates the rollout and waits for its end.
rollout() {
  local version=$1 id
  shift
  say "Rolling out app $version $*"
  id=$(fleetctl -o json rollout create --product app --version "$version" "$@" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rollout_id"])')
  echo "rollout $id created"
  wait_rollout "$id"
}

rollout 1.0.0

say "Pushing release app 1.1.0"
fleetctl release push --product app --version 1.1.0 --file "$demo/app-1.1.0" \
  --key "$demo/keys/release.key"
# One agent first, then two, then all, each stage baking 2 s while healthy;
# the rollout pauses itself if more than a third of the updates fail.
rollout 1.1.0 --stages 34,67,100 --bake 2s --max-failure-rate 34% \
  --min-samples 1

say "Agents"
fleetctl agents list

say "What each managed program reports about itself (version pid)"
for i in 1 2 3; do
  printf 'agent %s: %s\n' "$i" "$(cat "$demo/agent-$i/status" 2>/dev/null || echo '?')"
done

say "Releases"
fleetctl release list

say "Audit log: every change, under the operator's certificate name"
fleetctl audit list

say "Done: stopping agents and controller"
