#!/usr/bin/env bash
# Checks the example configs in deploy/config against the real binaries:
#   1. each loads as it is (`--config FILE --print-config` exits 0) and the
#      effective configuration shows the file's values;
#   2. each still loads with every optional "#key: value" line switched on,
#      so the commented keys are real keys with valid values;
#   3. each mentions every key its binary accepts (--print-config lists them
#      all), so a flag added later must be documented here too (as "key:",
#      "#key:" or, for examples that need the operator's files, "# key:");
#   4. a flag on the command line overrides the file, and a broken copy is
#      refused with an error naming the file, the line and the key.
#
# Usage: example_configs_test.sh CONTROLLER_YAML AGENT_YAML CONTROLLER_BIN AGENT_BIN
set -euo pipefail

controller_yaml=$1 agent_yaml=$2 controller_bin=$3 agent_bin=$4
tmp=${TEST_TMPDIR:-$(mktemp -d)}
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# The binaries check that the files they are given exist; the examples name
# /etc/fleet/release.pub, /etc/fleet/pki and /etc/fleet/ca.crt, so the runs
# override those with real files (--print-config does not parse them).
key="$tmp/release.pub" pki="$tmp/pki" ca="$tmp/ca.crt"
echo "not parsed by --print-config" >"$key"
mkdir -p "$pki"
echo "not parsed by --print-config" >"$ca"

# check NAME BINARY YAML [FLAGS...]: prints the effective config to $tmp/NAME.out
check_loads() {
  local name=$1 bin=$2 yaml=$3
  shift 3
  if ! "$bin" --config "$yaml" "$@" --print-config >"$tmp/$name.out" 2>"$tmp/$name.err"; then
    fail "$name: $bin --config $yaml refused it: $(cat "$tmp/$name.err")"
  fi
}
expect_line() {
  local name=$1 line=$2
  grep -qxF -- "$line" "$tmp/$name.out" ||
    fail "$name: effective config lacks \"$line\":"$'\n'"$(cat "$tmp/$name.out")"
}

# 1. As shipped.
check_loads controller "$controller_bin" "$controller_yaml" --trust-key "$key" --pki "$pki"
expect_line controller "data-dir: /var/lib/fleet-controller"
expect_line controller "listen: 0.0.0.0:7443"
check_loads agent "$agent_bin" "$agent_yaml" --tls-ca "$ca"
expect_line agent "controller: fleet.example.com:7443"
expect_line agent "exec: /opt/app/bin/app"
expect_line agent "  - /etc/fleet/release.pub"
expect_line agent "tls-ca: $ca"

# 2. Every optional key switched on ("#key: value" -> "key: value"; prose
# comments are "# text" and stay comments).
sed -E 's/^#([a-z_-]+:)/\1/' "$controller_yaml" >"$tmp/controller-all.yaml"
sed -E 's/^#([a-z_-]+:)/\1/' "$agent_yaml" >"$tmp/agent-all.yaml"
check_loads controller-all "$controller_bin" "$tmp/controller-all.yaml" --trust-key "$key" --pki "$pki"
expect_line controller-all "offline-timeout: 10m"
check_loads agent-all "$agent_bin" "$tmp/agent-all.yaml" --tls-ca "$ca"
expect_line agent-all "agent-id: web-01"
expect_line agent-all "  - ring=canary"
expect_line agent-all "  - 8080"

# 3. Every key the binary knows is in its example: set, "#key:" (optional,
# its default) or "# key:" (an example needing the operator's own files,
# which step 2 leaves commented).
for pair in "controller:$controller_yaml" "agent:$agent_yaml"; do
  name=${pair%%:*} yaml=${pair#*:}
  keys=$(sed -nE 's/^#?([a-z_-]+):.*/\1/p' "$tmp/$name.out" | sort -u)
  for k in $keys; do
    grep -qE "^(# ?)?$k:" "$yaml" || fail "$yaml does not document key \"$k\""
  done
done

# 4. Flags override the file; a typo is refused with file, line and key.
check_loads agent-override "$agent_bin" "$agent_yaml" --tls-ca "$ca" --product web --label env=prod
expect_line agent-override "product: web"
expect_line agent-override "  - env=prod"
sed 's/^state-dir:/state-directory:/' "$agent_yaml" >"$tmp/typo.yaml"
line=$(grep -n '^state-directory:' "$tmp/typo.yaml" | cut -d: -f1)
if "$agent_bin" --config "$tmp/typo.yaml" --print-config >/dev/null 2>"$tmp/typo.err"; then
  fail "a config with an unknown key was accepted"
elif ! grep -qF "$tmp/typo.yaml:$line: unknown key 'state-directory'" "$tmp/typo.err"; then
  fail "unknown-key error does not name file, line $line and key: $(cat "$tmp/typo.err")"
fi

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "example configs load"
