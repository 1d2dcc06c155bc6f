#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd:
#   1. `systemd-analyze verify` prints nothing about either unit (it exits 0
#      on unknown keys and unparsable values, so any output is a failure);
#   2. the restart, logging and hardening directives the units promise are
#      present with their values (so none can vanish silently);
#   3. `systemd-analyze security --offline` exposure is no higher than today;
#   4. every flag in ExecStart= exists in the real binary's --help, and every
#      REQUIRED flag is given there or set in the config file it names;
#   5. the config files the units read (deploy/config, installed as
#      /etc/fleet/*.yaml by the packages) put the data in the unit's
#      StateDirectory=, the one writable place.
#
# Usage: verify_units_test.sh CONTROLLER_UNIT AGENT_UNIT CONTROLLER_YAML
#                             AGENT_YAML CONTROLLER_BINARY AGENT_BINARY
# Needs systemd-analyze (Debian package "systemd"); fails if it is missing.
set -euo pipefail

controller_unit=$1 agent_unit=$2 controller_yaml=$3 agent_yaml=$4
controller_bin=$5 agent_bin=$6
tmp=${TEST_TMPDIR:-$(mktemp -d)}
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

if ! command -v systemd-analyze >/dev/null; then
  echo "FAIL: systemd-analyze not found; install the Debian package" \
    "\"systemd\" (deploy/setup.sh should list it)" >&2
  exit 1
fi

# 1. verify. It checks that ExecStart='s executable exists, so the copies run
# stand-ins under $tmp/bin; the committed units keep the packages' paths
# (the agent's real binary is in /usr/lib/fleet-agent, see its unit).
mkdir -p "$tmp/bin" "$tmp/units"
for name in fleet-controller fleet-agent; do
  printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/$name"
  chmod +x "$tmp/bin/$name"
done
cp "$controller_unit" "$tmp/units/fleet-controller.service"
cp "$agent_unit" "$tmp/units/fleet-agent.service"
declare -A installed_path=([fleet-controller]=/usr/bin/fleet-controller
  [fleet-agent]=/usr/lib/fleet-agent/fleet-agent)
for name in fleet-controller fleet-agent; do
  unit="$tmp/units/$name.service"
  path=${installed_path[$name]}
  grep -q "^ExecStart=$path " "$unit" ||
    fail "$name.service: ExecStart= does not run $path"
  sed -i "s|^ExecStart=$path |ExecStart=$tmp/bin/$name |" "$unit"
done
set +e
verify_output=$(cd "$tmp/units" && systemd-analyze verify --man=no \
  fleet-controller.service fleet-agent.service 2>&1)
verify_rc=$?
set -e
if [[ $verify_rc -ne 0 || -n "$verify_output" ]]; then
  fail "systemd-analyze verify (exit $verify_rc) said:"
  printf '%s\n' "$verify_output" >&2
else
  echo "ok: systemd-analyze verify: no output, exit 0"
fi

# 2. Directives, one exact line each.
require_lines() {
  local unit=$1
  shift
  local line
  for line in "$@"; do
    grep -qxF -- "$line" "$unit" || fail "$(basename "$unit"): missing \"$line\""
  done
}
require_lines "$controller_unit" \
  "Type=exec" "User=fleet" "Group=fleet" \
  "ExecStart=/usr/bin/fleet-controller --config /etc/fleet/controller.yaml" \
  "StateDirectory=fleet-controller" "StateDirectoryMode=0700" \
  "Restart=on-failure" "RestartSec=2" "LimitNOFILE=65536" \
  "KillSignal=SIGTERM" "TimeoutStopSec=30" \
  "StandardOutput=journal" "StandardError=journal" \
  "NoNewPrivileges=yes" "CapabilityBoundingSet=" "ProtectSystem=strict" \
  "ReadWritePaths=/var/lib/fleet-controller" "ProtectHome=yes" \
  "PrivateTmp=yes" "PrivateDevices=yes" "ProtectKernelTunables=yes" \
  "ProtectKernelModules=yes" "ProtectKernelLogs=yes" \
  "ProtectControlGroups=yes" \
  "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" \
  "RestrictNamespaces=yes" "LockPersonality=yes" \
  "MemoryDenyWriteExecute=yes" "RestrictRealtime=yes" \
  "RestrictSUIDSGID=yes" "SystemCallArchitectures=native" \
  "WantedBy=multi-user.target"
# The controller may write its state dir and nothing else.
[[ $(grep -c '^ReadWritePaths=' "$controller_unit") -eq 1 ]] ||
  fail "fleet-controller.service: more than one ReadWritePaths= line"
require_lines "$agent_unit" \
  "Type=exec" \
  "ExecStart=/usr/lib/fleet-agent/fleet-agent --config /etc/fleet/agent.yaml" \
  'ExecReload=/bin/kill -HUP $MAINPID' \
  "StateDirectory=fleet-agent" "StateDirectoryMode=0700" \
  "Restart=always" "KillMode=mixed" "KillSignal=SIGTERM" \
  "TimeoutStopSec=30" "StandardOutput=journal" "StandardError=journal" \
  "NoNewPrivileges=yes" "ProtectSystem=full" "ProtectHome=read-only" \
  "ReadWritePaths=/usr/lib/fleet-agent" \
  "PrivateTmp=yes" "ProtectKernelModules=yes" "ProtectKernelLogs=yes" \
  "ProtectControlGroups=yes" "RestrictRealtime=yes" "LockPersonality=yes" \
  "WantedBy=multi-user.target"
# Root on purpose (see the unit's comment).
if grep -q '^User=' "$agent_unit"; then
  fail "fleet-agent.service: sets User=; the agent must run as root"
fi
# Inherited by the managed program, and the agent execs what it just wrote
# on a self-update (see the unit's comment).
for directive in MemoryDenyWriteExecute SystemCallFilter; do
  if grep -q "^$directive=" "$agent_unit"; then
    fail "fleet-agent.service: sets $directive=, which breaks managed programs or self-update"
  fi
done

# 3. Exposure, in tenths (systemd 252's scale 0-10). Lower these when a
# change tightens a unit; raising one needs a reason in the unit's comments.
check_exposure() {
  local unit=$1 max=$2 summary
  summary=$(cd "$tmp/units" &&
    systemd-analyze security --offline=yes "$unit" 2>&1 | tail -n 1)
  if (cd "$tmp/units" && systemd-analyze security --offline=yes \
    --threshold="$max" "$unit" >/dev/null 2>&1); then
    echo "ok: $summary (limit $max/100)"
  else
    fail "$unit exposure above $max/100: $summary"
  fi
}
check_exposure fleet-controller.service 14
check_exposure fleet-agent.service 81

# 4. Flags against the real binaries; a REQUIRED flag may come from the
# config file instead (as "key:" on a line of its own).
check_flags() {
  local unit=$1 bin=$2 yaml=$3 help exec_start flag
  help=$("$bin" --help 2>&1) || true
  exec_start=$(grep '^ExecStart=' "$unit")
  for flag in $(grep -oE -- '(^| )--[a-z][a-z0-9-]*' <<<"$exec_start"); do
    grep -qE -- "(^|[ ,])$flag( |$)" <<<"$help" ||
      fail "$(basename "$unit"): $flag is not a flag of $(basename "$bin")"
  done
  for flag in $(grep -E 'REQUIRED' <<<"$help" | grep -oE -- '--[a-z][a-z0-9-]*'); do
    grep -qE -- " $flag( |$)" <<<"$exec_start" || grep -qE "^${flag#--}:" "$yaml" ||
      fail "$(basename "$unit"): required flag $flag neither in ExecStart= nor in $(basename "$yaml")"
  done
}
check_flags "$controller_unit" "$controller_bin" "$controller_yaml"
check_flags "$agent_unit" "$agent_bin" "$agent_yaml"

# 5. The configs keep the data where the units let them write.
grep -qx 'data-dir: /var/lib/fleet-controller' "$controller_yaml" ||
  fail "$(basename "$controller_yaml"): data-dir is not /var/lib/fleet-controller (StateDirectory=)"
grep -qx 'state-dir: /var/lib/fleet-agent' "$agent_yaml" ||
  fail "$(basename "$agent_yaml"): state-dir is not /var/lib/fleet-agent (StateDirectory=)"

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
