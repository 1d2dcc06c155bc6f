#!/usr/bin/env bash
# fleetctl version, doctor and completion against a real fleet-controller on
# 127.0.0.1 (and against none), with the real fleetctl binary and bash.
#
# Usage: info_commands_test.sh FLEETCTL CONTROLLER_BIN
set -euo pipefail

fleetctl=$1 controller_bin=$2
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/info.XXXXXX")
controller_pid=
cleanup() {
  [[ -n $controller_pid ]] && kill -KILL "$controller_pid" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
# run NAME ARGS...: output in $tmp/NAME.out/.err, exit code in $rc.
run() {
  local name=$1
  shift
  rc=0
  "$fleetctl" --insecure "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
}
has() { grep -qE -- "$2" "$tmp/$1.out" || fail "$1: no \"$2\" in: $(cat "$tmp/$1.out" "$tmp/$1.err")"; }

openssl genpkey -algorithm ed25519 -out "$tmp/release.key" 2>/dev/null
openssl pkey -in "$tmp/release.key" -pubout -out "$tmp/release.pub"
"$controller_bin" --data-dir "$tmp/data" --listen 127.0.0.1:0 --http-listen "" --insecure \
  --trust-key "$tmp/release.pub" >/dev/null 2>"$tmp/controller.log" &
controller_pid=$!
for _ in $(seq 1 100); do
  grep -q '"grpc_port"' "$tmp/controller.log" && break
  sleep 0.1
done
port=$(grep -o '"grpc_port":[0-9]*' "$tmp/controller.log" | head -1 | cut -d: -f2)
[[ -n $port ]] || { cat "$tmp/controller.log" >&2; exit 1; }
export FLEET_CONTROLLER=127.0.0.1:$port
controller_version=$("$controller_bin" --version | awk '{print $2}')
client_version=$("$fleetctl" --version | awk '{print $2}')

# version: both sides; JSON parses and carries the server info.
run version version
((rc == 0)) || fail "version exited $rc"
has version "^fleetctl $client_version\$"
has version "^fleet-controller $controller_version \(schema [0-9]+\) at 127.0.0.1:$port\$"
run version_json version -o json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["server"]["version"]==sys.argv[2] and d["client"]["version"]==sys.argv[3], d' \
  "$tmp/version_json.out" "$controller_version" "$client_version" ||
  fail "version -o json: $(cat "$tmp/version_json.out")"

# doctor: all ok with a good key; a bad key file fails the run (exit 1)
# but every check is still printed.
run doctor doctor --trust-key "$tmp/release.pub"
((rc == 0)) || fail "doctor exited $rc: $(cat "$tmp/doctor.out" "$tmp/doctor.err")"
has doctor "^ok +controller +reached 127.0.0.1:$port"
has doctor "^ok +version "
has doctor "^(ok|warn) +clock +controller clock is [0-9]+ ms (ahead|behind)"
has doctor "^ok +trust key +.*release.pub is an Ed25519 public key"
run doctor_bad doctor --trust-key "$tmp/release.key" --trust-key "$tmp/missing.pub"
((rc == 1)) || fail "doctor with bad keys exited $rc, want 1"
has doctor_bad "^ok +controller"
[[ $(grep -c '^FAIL *trust key' "$tmp/doctor_bad.out") == 2 ]] ||
  fail "doctor_bad: want 2 failed key checks: $(cat "$tmp/doctor_bad.out")"

# completion: bash really completes from the generated script, at every
# level; an unknown shell is a usage error (exit 2).
run completion completion bash
((rc == 0)) || fail "completion bash exited $rc"
complete_words() {  # complete_words WORD... : what bash offers for the last word
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _fleetctl; echo "${COMPREPLY[*]}"' \
    _ "$tmp/completion.out" "$@"
}
[[ $(complete_words fleetctl rol) == rollout ]] || fail "fleetctl rol<TAB>: $(complete_words fleetctl rol)"
[[ $(complete_words fleetctl rollout cr) == create ]] || fail "rollout cr<TAB>: $(complete_words fleetctl rollout cr)"
[[ " $(complete_words fleetctl rollout create --max-) " == *" --max-in-flight "* ]] ||
  fail "rollout create --max-<TAB>: $(complete_words fleetctl rollout create --max-)"
[[ " $(complete_words fleetctl -o json release "") " == *" push "* ]] ||
  fail "flags before the command: $(complete_words fleetctl -o json release "")"
run completion_zsh completion zsh
((rc == 0)) || fail "completion zsh exited $rc"
has completion_zsh "bashcompinit"
run completion_fish completion fish
((rc == 2)) || fail "completion fish exited $rc, want 2"

# Without a controller: version still shows the client, then fails (1).
kill -TERM "$controller_pid"
wait "$controller_pid" || true
controller_pid=
run version_down version --timeout 2s
((rc == 1)) || fail "version without a controller exited $rc, want 1"
has version_down "^fleetctl $client_version\$"
run doctor_down doctor --timeout 2s
((rc == 1)) || fail "doctor without a controller exited $rc, want 1"
has doctor_down "^FAIL +controller +cannot reach the controller"

((failures == 0)) || exit 1
echo "version, doctor and completion work"
