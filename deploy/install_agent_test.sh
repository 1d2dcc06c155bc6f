#!/usr/bin/env bash
# deploy/install-agent.sh against a throw-away root (--root DIR; the real
# system is never touched, checked before and after):
#   1. bad arguments exit 2 and name the flag and the fix, changing nothing;
#   2. a full install: the package is installed in the root, ca.crt,
#      release.pub and the 0600 enrollment token are in /etc/fleet, and the
#      agent.yaml it wrote is accepted by the installed fleet-agent
#      (--print-config) with exactly the values given;
#   3. running it again (another token, new labels) replaces the config and
#      token, keeping one package installed.
#
# Usage: install_agent_test.sh INSTALL_AGENT_SH AGENT_DEB THROWAWAY_ROOT_SH
set -euo pipefail

source "$3"
run_as_root_or_fakeroot "$0" "$@"

install_agent=$(realpath "$1") agent_deb=$(realpath "$2")
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/install-agent.XXXXXX")
root=$tmp/root
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
host_before=$(host_state)
make_throwaway_root "$root"

# Real inputs: a CA certificate, an Ed25519 release key, a token file.
openssl req -x509 -newkey ed25519 -nodes -keyout "$tmp/ca.key" -out "$tmp/ca.crt" \
  -subj "/CN=fleet test CA" -days 1 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$tmp/release.key" 2>/dev/null
openssl pkey -in "$tmp/release.key" -pubout -out "$tmp/release.pub"
echo "tok_first-0123456789abcdef" >"$tmp/token"

args=(--root "$root" --package "$agent_deb" --controller fleet.example.com:7443
  --ca "$tmp/ca.crt" --trust-key "$tmp/release.pub" --token-file "$tmp/token"
  --product web --exec /opt/web/bin/web)

# 1. Refusals: expect_usage NAME PATTERN ARGS...
expect_usage() {
  local name=$1 pattern=$2 rc=0
  shift 2
  "$install_agent" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
  ((rc == 2)) || fail "$name: exit $rc, expected 2: $(cat "$tmp/$name.err")"
  grep -qE -- "$pattern" "$tmp/$name.err" ||
    fail "$name: error does not match \"$pattern\": $(cat "$tmp/$name.err")"
}
expect_usage no-controller '--controller is required: HOST:PORT' \
  --root "$root" --package "$agent_deb" --ca "$tmp/ca.crt"
expect_usage bad-controller '--controller "fleet.example.com" is not HOST:PORT' \
  "${args[@]}" --controller fleet.example.com
expect_usage key-as-ca '--ca .* is not a PEM certificate' "${args[@]}" --ca "$tmp/release.pub"
expect_usage private-key '--trust-key .* is not a PEM public key; give release.pub, never release.key' \
  --trust-key "$tmp/release.key" "${args[@]}"
expect_usage relative-exec '--exec "bin/web" must be an absolute path' "${args[@]}" --exec bin/web
expect_usage two-tokens 'give --token or --token-file, not both' "${args[@]}" --token abc
expect_usage bad-label '--label "ring" is not KEY=VALUE' "${args[@]}" --label ring
expect_usage not-a-deb 'is not a fleet-agent package' "${args[@]}" --package "$tmp/ca.crt"
[[ ! -e $root/etc/fleet ]] || fail "a refused run wrote $root/etc/fleet"
[[ $(dpkg-query --root="$root" -W -f='${Status}' fleet-agent 2>/dev/null || true) != "install ok installed" ]] ||
  fail "a refused run installed the package"

# 2. The real thing.
if ! "$install_agent" "${args[@]}" --label ring=canary --label site=ams1 \
  -- --port 8080 >"$tmp/install.out" 2>&1; then
  fail "install-agent.sh failed: $(cat "$tmp/install.out")"
fi
grep -q '^installed fleet-agent ' "$tmp/install.out" || fail "no 'installed' line: $(cat "$tmp/install.out")"
grep -q '^not started (installed into ' "$tmp/install.out" || fail "no 'not started' line: $(cat "$tmp/install.out")"
[[ $(dpkg-query --root="$root" -W -f='${Status}' fleet-agent) == "install ok installed" ]] ||
  fail "fleet-agent is not installed in the root"
expect_mode() {
  local got
  got=$(stat -c '%a %u:%g' "$root$1" 2>/dev/null || echo missing)
  [[ $got == "$2" ]] || fail "$1 is \"$got\", expected \"$2\""
}
expect_mode /etc/fleet/enroll-token "600 0:0"
expect_mode /etc/fleet/agent.yaml "644 0:0"
expect_mode /etc/fleet/ca.crt "644 0:0"
expect_mode /etc/fleet/release.pub "644 0:0"
[[ $(cat "$root/etc/fleet/enroll-token") == tok_first-0123456789abcdef ]] || fail "enroll-token content"
cmp -s "$root/etc/fleet/ca.crt" "$tmp/ca.crt" || fail "ca.crt is not the given CA"
cmp -s "$root/etc/fleet/release.pub" "$tmp/release.pub" || fail "release.pub is not the given key"
ls "$root/etc/fleet" | grep -qE '\.(new|err)$' && fail "temporary files left in /etc/fleet: $(ls "$root/etc/fleet")"

# The installed agent reads the written config; its /etc/fleet and
# /var/lib paths are the target's, so the check copy points into the root.
sed "s|\"/etc/fleet/|\"$root/etc/fleet/|; s|: /etc/fleet/|: $root/etc/fleet/|; s|^state-dir: /|state-dir: $root/|" \
  "$root/etc/fleet/agent.yaml" >"$tmp/agent-check.yaml"
if ! "$root/usr/bin/fleet-agent" --config "$tmp/agent-check.yaml" --print-config \
  >"$tmp/effective.yaml" 2>"$tmp/effective.err"; then
  fail "fleet-agent refused the written agent.yaml: $(cat "$tmp/effective.err")"$'\n'"$(cat "$root/etc/fleet/agent.yaml")"
fi
for line in "controller: fleet.example.com:7443" "product: web" "exec: /opt/web/bin/web" \
  "tls-ca: $root/etc/fleet/ca.crt" "enroll-token-file: $root/etc/fleet/enroll-token" \
  "state-dir: $root/var/lib/fleet-agent" "  - $root/etc/fleet/release.pub" \
  "  - ring=canary" "  - site=ams1" "  - --port" "  - 8080"; do
  grep -qxF -- "$line" "$tmp/effective.yaml" ||
    fail "effective config lacks \"$line\":"$'\n'"$(cat "$tmp/effective.yaml")"
done
grep -qxF -- "insecure: true" "$tmp/effective.yaml" && fail "the written config turns TLS off"

# 3. Again, with a token on the command line and other labels.
new_args=()
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --token-file ]]; then
    ((i += 1))
  else
    new_args+=("${args[i]}")
  fi
done
"$install_agent" "${new_args[@]}" --token tok_second --label ring=stable >"$tmp/again.out" 2>&1 ||
  fail "second install-agent.sh failed: $(cat "$tmp/again.out")"
[[ $(cat "$root/etc/fleet/enroll-token") == tok_second ]] || fail "second run kept the old token"
grep -q '"ring=stable"' "$root/etc/fleet/agent.yaml" || fail "second run kept the old labels"
grep -q 'canary' "$root/etc/fleet/agent.yaml" && fail "second run left the old label canary"
[[ $(host_state) == "$host_before" ]] || fail "the host's /etc/passwd, /etc/group or dpkg status changed"

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "install-agent.sh installs and configures an agent in a throw-away root"
