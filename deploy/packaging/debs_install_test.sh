#!/usr/bin/env bash
# Installs the fleet-controller, fleet-agent and fleetctl packages into a
# throw-away root with `dpkg --root` and checks what an operator relies on:
#   1. lintian reports no error for any of them;
#   2. dpkg installs them (dependencies checked against this machine's
#      package database, copied into the root) with maintainer scripts run
#      chrootless, DPKG_ROOT pointing at the root;
#   3. files and modes: binaries, units, man pages, docs; the example
#      configs are the repository's and are dpkg conffiles;
#   4. postinst created the "fleet" system user and the state dirs, with
#      the right owners and modes, inside the root and nowhere else;
#   5. the installed binaries run: --version of each matches the package
#      version, and the installed fleetctl's `version` talks to the
#      installed fleet-controller on 127.0.0.1;
#   6. installing again (an upgrade of the same version) changes nothing;
#      purge removes the agent's state and keeps the controller's database.
# The real system is never touched: /etc/passwd, /etc/group and
# /var/lib/dpkg/status are compared before and after.
#
# Usage: debs_install_test.sh CONTROLLER_DEB AGENT_DEB FLEETCTL_DEB
#                             CONTROLLER_YAML AGENT_YAML
# Runs as root, or under fakeroot where root cannot chown (throwaway_root.sh).
set -euo pipefail

source "$(dirname "$0")/throwaway_root.sh"
run_as_root_or_fakeroot "$0" "$@"

controller_deb=$(realpath "$1") agent_deb=$(realpath "$2")
fleetctl_deb=$(realpath "$3") controller_yaml=$4 agent_yaml=$5
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/debs.XXXXXX")
root=$tmp/root
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
host_before=$(host_state)

# 1. lintian: errors fail the test; warnings are listed in README.md.
if command -v lintian >/dev/null; then
  HOME=$tmp lintian --tag-display-limit 0 "$controller_deb" "$agent_deb" \
    "$fleetctl_deb" >"$tmp/lintian.out" 2>&1 || true
  if grep -q '^E:' "$tmp/lintian.out"; then
    fail "lintian errors:"$'\n'"$(grep '^E:' "$tmp/lintian.out")"
  else
    echo "ok: lintian: no errors ($(grep -c '^W:' "$tmp/lintian.out" || true) warnings)"
  fi
else
  fail "lintian not found; deploy/setup.sh installs it"
fi

# 2. The throw-away root: a dpkg database that knows this machine's
# packages (so Depends are checked for real) and a passwd/group holding
# only root, for useradd --prefix.
make_throwaway_root "$root"
dpkg_root() {
  dpkg --root="$root" --force-script-chrootless --log="$tmp/dpkg.log" "$@"
}
if ! dpkg_root -i "$controller_deb" "$agent_deb" "$fleetctl_deb" \
  >"$tmp/install.out" 2>&1; then
  cat "$tmp/install.out" >&2
  echo "FAIL: dpkg --root -i failed" >&2
  exit 1
fi
for pkg in fleet-controller fleet-agent fleetctl; do
  status=$(dpkg-query --root="$root" -W -f='${Status}' "$pkg")
  [[ $status == "install ok installed" ]] || fail "$pkg: status \"$status\""
done
version=$(dpkg-query --root="$root" -W -f='${Version}' fleet-agent)

# 3. Files: "path mode owner:group" each.
expect_file() {
  local path=$1 mode=$2 owner=$3 got
  if [[ ! -e $root$path ]]; then
    fail "$path is missing"
    return
  fi
  got=$(stat -c '%a %u:%g' "$root$path")
  [[ $got == "$mode $owner" ]] || fail "$path is \"$got\", expected \"$mode $owner\""
}
expect_file /usr/bin/fleet-controller 755 0:0
expect_file /usr/bin/fleetctl 755 0:0
expect_file /usr/lib/fleet-agent/fleet-agent 755 0:0
[[ $(readlink "$root/usr/bin/fleet-agent") == ../lib/fleet-agent/fleet-agent ]] ||
  fail "/usr/bin/fleet-agent is not a symlink to ../lib/fleet-agent/fleet-agent"
for bin in fleet-controller fleet-agent fleetctl; do
  expect_file "/usr/share/man/man1/$bin.1.gz" 644 0:0
  expect_file "/usr/share/doc/$bin/copyright" 644 0:0
  expect_file "/usr/share/doc/$bin/changelog.gz" 644 0:0
  zcat "$root/usr/share/man/man1/$bin.1.gz" | grep -q "^\.TH ${bin^^} \"1\"" ||
    fail "$bin.1.gz is not a section 1 man page"
  zcat "$root/usr/share/man/man1/$bin.1.gz" | grep -q 'Print this help message' ||
    fail "$bin.1.gz does not list the options from --help"
done
expect_file /lib/systemd/system/fleet-controller.service 644 0:0
expect_file /lib/systemd/system/fleet-agent.service 644 0:0
expect_file /etc/fleet/controller.yaml 644 0:0
expect_file /etc/fleet/agent.yaml 644 0:0
cmp -s "$root/etc/fleet/controller.yaml" "$controller_yaml" ||
  fail "/etc/fleet/controller.yaml differs from deploy/config/controller.yaml"
cmp -s "$root/etc/fleet/agent.yaml" "$agent_yaml" ||
  fail "/etc/fleet/agent.yaml differs from deploy/config/agent.yaml"
dpkg-query --root="$root" -W -f='${Conffiles}\n' fleet-controller |
  grep -q '^ /etc/fleet/controller.yaml [0-9a-f]\{32\}$' ||
  fail "/etc/fleet/controller.yaml is not a conffile of fleet-controller"
dpkg-query --root="$root" -W -f='${Conffiles}\n' fleet-agent |
  grep -q '^ /etc/fleet/agent.yaml [0-9a-f]\{32\}$' ||
  fail "/etc/fleet/agent.yaml is not a conffile of fleet-agent"

# 4. What postinst made.
fleet_entry=$(grep '^fleet:' "$root/etc/passwd" || true)
IFS=: read -r _ _ fleet_uid fleet_gid _ fleet_home fleet_shell <<<"$fleet_entry"
if [[ -z $fleet_entry ]]; then
  fail "postinst did not add the fleet user to the root's /etc/passwd"
else
  ((fleet_uid > 0 && fleet_uid < 1000)) || fail "fleet uid $fleet_uid is not a system uid"
  [[ $fleet_home == /var/lib/fleet-controller ]] || fail "fleet home is $fleet_home"
  [[ $fleet_shell == /usr/sbin/nologin ]] || fail "fleet shell is $fleet_shell"
  grep -q "^fleet:x:$fleet_gid:" "$root/etc/group" || fail "no fleet group with gid $fleet_gid"
  expect_file /var/lib/fleet-controller 700 "$fleet_uid:$fleet_gid"
fi
expect_file /var/lib/fleet-agent 700 0:0
[[ $(host_state) == "$host_before" ]] ||
  fail "the host's /etc/passwd, /etc/group or dpkg status changed"

# 5. The installed binaries run, and the installed fleetctl reaches the
# installed controller.
for bin in fleet-controller fleet-agent; do
  got=$("$root/usr/bin/$bin" --version 2>&1) || fail "$bin --version exited $?"
  [[ $got == "$bin $version" ]] || fail "$bin --version says \"$got\", package is $version"
done
openssl genpkey -algorithm ed25519 -out "$tmp/release.key" 2>/dev/null
openssl pkey -in "$tmp/release.key" -pubout -out "$tmp/release.pub"
"$root/usr/bin/fleet-controller" --data-dir "$tmp/data" --listen 127.0.0.1:0 \
  --http-listen "" --insecure --trust-key "$tmp/release.pub" \
  >/dev/null 2>"$tmp/controller.log" &
controller_pid=$!
for _ in $(seq 1 100); do
  grep -q '"grpc_port"' "$tmp/controller.log" && break
  sleep 0.1
done
port=$(grep -o '"grpc_port":[0-9]*' "$tmp/controller.log" | head -1 | cut -d: -f2)
if [[ -z $port ]]; then
  fail "installed fleet-controller did not start: $(cat "$tmp/controller.log")"
elif ! "$root/usr/bin/fleetctl" --insecure --controller "127.0.0.1:$port" \
  version >"$tmp/version.out" 2>&1; then
  fail "installed fleetctl version failed: $(cat "$tmp/version.out")"
else
  grep -qx "fleetctl $version" "$tmp/version.out" &&
    grep -q "^fleet-controller $version (schema [0-9]*) at 127.0.0.1:$port\$" "$tmp/version.out" ||
    fail "fleetctl version printed: $(cat "$tmp/version.out")"
fi
kill -TERM "$controller_pid" && wait "$controller_pid" || true
controller_pid=

# 6. Again (postinst with the old version as $2), then remove and purge.
echo "# operator's edit" >>"$root/etc/fleet/agent.yaml"
dpkg_root -i "$controller_deb" "$agent_deb" "$fleetctl_deb" >"$tmp/reinstall.out" 2>&1 ||
  fail "installing the same packages again failed: $(cat "$tmp/reinstall.out")"
[[ $(grep -c '^fleet:' "$root/etc/passwd") -eq 1 ]] || fail "reinstall added a second fleet user"
expect_file /var/lib/fleet-controller 700 "$fleet_uid:$fleet_gid"
tail -n 1 "$root/etc/fleet/agent.yaml" | grep -qx "# operator's edit" ||
  fail "reinstall overwrote the operator's /etc/fleet/agent.yaml"
# What a self-update leaves beside the binary, and state the agent wrote.
cp "$root/usr/lib/fleet-agent/fleet-agent" "$root/usr/lib/fleet-agent/fleet-agent.previous"
touch "$root/var/lib/fleet-controller/fleet.db" "$root/var/lib/fleet-agent/journal.db"
dpkg_root --purge fleet-agent fleet-controller fleetctl >"$tmp/purge.out" 2>&1 ||
  fail "purge failed: $(cat "$tmp/purge.out")"
[[ ! -e $root/var/lib/fleet-agent ]] || fail "purge left /var/lib/fleet-agent"
[[ ! -e $root/etc/fleet/agent.yaml ]] || fail "purge left /etc/fleet/agent.yaml"
[[ ! -e $root/usr/bin/fleet-agent ]] || fail "purge left /usr/bin/fleet-agent"
[[ ! -e $root/usr/lib/fleet-agent ]] ||
  fail "purge left /usr/lib/fleet-agent: $(ls -A "$root/usr/lib/fleet-agent")"
[[ -e $root/var/lib/fleet-controller/fleet.db ]] ||
  fail "purging fleet-controller deleted the fleet's database"
grep -q 'kept /var/lib/fleet-controller' "$tmp/purge.out" ||
  fail "purge did not say it kept the controller's data: $(cat "$tmp/purge.out")"
[[ $(host_state) == "$host_before" ]] ||
  fail "the host's /etc/passwd, /etc/group or dpkg status changed"

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "packages install, run and purge in a throw-away root"
