#!/usr/bin/env bash
# fleetctl version, doctor and completion against a real fleet-controller on
# 127.0.0.1 (and against none), with the real fleetctl binary and bash;
# doctor's TLS checks against controllers with real certificates; colours
# on a real pty (script(1)) and not in a pipe or with NO_COLOR; -o yaml.
#
# Usage: info_commands_test.sh FLEETCTL CONTROLLER_BIN
set -euo pipefail

fleetctl=$1 controller_bin=$2
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/info.XXXXXX")
controller_pid=
tls_pids=()
cleanup() {
  [[ -n $controller_pid ]] && kill -KILL "$controller_pid" 2>/dev/null
  ((${#tls_pids[@]} == 0)) || kill -KILL "${tls_pids[@]}" 2>/dev/null
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

# Colours: never in a pipe; on a terminal (a pty from script(1)) unless
# NO_COLOR is set; --color always/never override.
grep -q $'\x1b' "$tmp/doctor.out" && fail "piped doctor output has escape codes"
run doctor_always doctor --color always
has doctor_always $'^\x1b\\[32mok\x1b\\[0m +controller'
pty() {  # pty NAME [ENV=VALUE...] -- ARGS: fleetctl on a terminal
  local name=$1
  shift
  local env=()
  while [[ $1 != -- ]]; do env+=("$1"); shift; done
  shift
  env TERM=xterm "${env[@]}" script -qefc "$(printf '%q ' "$fleetctl" --insecure "$@")" /dev/null \
    >"$tmp/$name.out" 2>&1 </dev/null || true
}
pty doctor_tty -- doctor
grep -q $'\x1b\\[32mok' "$tmp/doctor_tty.out" || fail "doctor on a terminal has no colour: $(cat -v "$tmp/doctor_tty.out")"
pty doctor_no_color NO_COLOR=1 -- doctor
grep -q $'\x1b' "$tmp/doctor_no_color.out" && fail "NO_COLOR=1 still coloured: $(cat -v "$tmp/doctor_no_color.out")"
grep -q '^ok' "$tmp/doctor_no_color.out" || fail "doctor under NO_COLOR printed: $(cat -v "$tmp/doctor_no_color.out")"
pty doctor_never -- doctor --color never
grep -q $'\x1b' "$tmp/doctor_never.out" && fail "--color never still coloured"

# -o yaml: the same document as -o json.
run version_yaml version -o yaml
python3 - "$tmp/version_json.out" "$tmp/version_yaml.out" <<'PY' || fail "version -o yaml: $(cat "$tmp/version_yaml.out")"
import json, sys
doc = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
assert text.startswith("client:\n  version: "), text
assert "server:\n" in text and "schema_version: " in text, text
assert doc["client"]["version"] in text, text
PY

# doctor's TLS checks against controllers with real certificates: one
# whose certificate names 127.0.0.1, one from another CA naming only
# only.example.
"$fleetctl" pki init --out "$tmp/pki" >/dev/null
"$fleetctl" pki init --out "$tmp/pki2" --host only.example >/dev/null
tls_pids=()
start_tls_controller() {  # start_tls_controller PKI_DIR: sets $tls_port
  "$controller_bin" --data-dir "$tmp/data-$(basename "$1")" --listen 127.0.0.1:0 \
    --http-listen "" --pki "$1" --trust-key "$tmp/release.pub" \
    >/dev/null 2>"$tmp/controller-$(basename "$1").log" &
  tls_pids+=($!)
  tls_port=
  for _ in $(seq 1 100); do
    tls_port=$(grep -o '"grpc_port":[0-9]*' "$tmp/controller-$(basename "$1").log" | head -1 | cut -d: -f2 || true)
    [[ -n $tls_port ]] && return
    sleep 0.1
  done
  cat "$tmp/controller-$(basename "$1").log" >&2
  fail "TLS controller with $1 did not start"
}
run_tls() {  # like run, without --insecure
  local name=$1
  shift
  rc=0
  "$fleetctl" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
}
start_tls_controller "$tmp/pki"
port1=$tls_port
start_tls_controller "$tmp/pki2"
port2=$tls_port
run_tls tls_ok doctor --pki "$tmp/pki" --controller "127.0.0.1:$port1"
((rc == 0)) || fail "doctor over TLS exited $rc: $(cat "$tmp/tls_ok.out" "$tmp/tls_ok.err")"
has tls_ok "^ok +ca +.*ca.crt \(.*\) expires in "
has tls_ok "^ok +client cert +.*admin.crt \(admin, fleet-admin\) matches its key, issued by the CA, expires in "
has tls_ok "^ok +server cert +the controller's certificate names 127.0.0.1, issued by the CA"
has tls_ok "^ok +controller +reached 127.0.0.1:$port1"
run_tls tls_wrong_key doctor --controller "127.0.0.1:$port1" --tls-ca "$tmp/pki/ca.crt" \
  --tls-cert "$tmp/pki/admin.crt" --tls-key "$tmp/pki2/admin.key"
((rc == 1)) || fail "doctor with a foreign key exited $rc, want 1"
has tls_wrong_key "^FAIL +client cert +.*pki2/admin.key is not the key of .*pki/admin.crt; give the pair written together; issue a new one: fleetctl pki issue"
run_tls tls_other_ca doctor --controller "127.0.0.1:$port1" --tls-ca "$tmp/pki/ca.crt" \
  --tls-cert "$tmp/pki2/admin.crt" --tls-key "$tmp/pki2/admin.key"
has tls_other_ca "^FAIL +client cert +.*pki2/admin.crt does not verify against .*pki/ca.crt"
run_tls tls_host doctor --pki "$tmp/pki2" --controller "127.0.0.1:$port2"
((rc == 1)) || fail "doctor against a certificate for another host exited $rc, want 1"
has tls_host "^FAIL +server cert +the controller's certificate names only.example, not 127.0.0.1; connect with --controller to one of those names"
run_tls tls_server_ca doctor --pki "$tmp/pki" --controller "127.0.0.1:$port2"
has tls_server_ca "^FAIL +server cert +the controller's certificate \(fleet-controller\) does not verify against .*pki/ca.crt"
run_tls tls_none doctor --controller "127.0.0.1:$port1"
((rc == 1)) || fail "doctor without TLS files exited $rc, want 1"
has tls_none "^FAIL +tls +no TLS files: give --pki DIR"
kill -TERM "${tls_pids[@]}" 2>/dev/null || true
wait "${tls_pids[@]}" 2>/dev/null || true
tls_pids=()

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
