#!/usr/bin/env bash
# Builds the Debian packages fleet-controller, fleet-agent and fleetctl
# (amd64 or whatever dpkg says this machine is) from fleet's binaries.
#
# Usage: deploy/packaging/build-debs.sh [--out DIR]
#          [--controller BIN --agent BIN --fleetctl BIN]
#
#   --out DIR         where the .deb files go (default: dist/)
#   --controller, --agent, --fleetctl
#                     the binaries to package; all three or none. Without
#                     them the script runs `bazel build -c opt` and packages
#                     the optimized binaries.
#   --versions-from-binaries
#                     take each version from the binary's --version instead
#                     of reading the headers (the Bazel genrule: its sandbox
#                     holds the binaries, which were compiled from them)
#
# Each package's version is its binary's version header
# (controller/version.h, agent/version.h, cli/command_line.h); the binary's
# --version must agree, so a stale binary is refused. Needs dpkg-deb,
# dpkg-shlibdeps (dpkg-dev) and help2man; deploy/setup.sh installs them.
#
# What goes where (deploy/packaging/README.md has the whole list):
#   /usr/bin/NAME                         stripped binary (the agent's is in
#                                         /usr/lib/fleet-agent, see its unit)
#   /lib/systemd/system/NAME.service      controller and agent
#   /etc/fleet/{controller,agent}.yaml    example configs, dpkg conffiles
#   /usr/share/man/man1/NAME.1.gz         from --help, by help2man
#   /usr/share/doc/NAME/                  copyright, changelog.gz
#   DEBIAN/postinst, prerm, postrm        deploy/packaging/NAME.*
#
# Exit status: 0 all three built; 1 anything failed (the message says what).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=dist
versions_from_binaries=0
declare -A bin=()

die() {
  echo "build-debs.sh: $*" >&2
  exit 1
}

while (($# > 0)); do
  case "$1" in
  --out) out=${2:?--out needs a directory}; shift 2 ;;
  --controller) bin[fleet-controller]=${2:?--controller needs a file}; shift 2 ;;
  --agent) bin[fleet-agent]=${2:?--agent needs a file}; shift 2 ;;
  --fleetctl) bin[fleetctl]=${2:?--fleetctl needs a file}; shift 2 ;;
  --versions-from-binaries) versions_from_binaries=1; shift ;;
  -h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
  *) die "unknown argument \"$1\"; see --help" ;;
  esac
done

for tool in dpkg-deb dpkg-shlibdeps help2man strip gzip; do
  command -v "$tool" >/dev/null ||
    die "$tool not found; run deploy/setup.sh (packages dpkg-dev, help2man, binutils)"
done

if ((${#bin[@]} == 0)); then
  (cd "$repo" && bazel build -c opt //controller:fleet-controller \
    //agent:fleet-agent //cli:fleetctl) || die "bazel build -c opt failed"
  bazel_bin=$(cd "$repo" && bazel info -c opt bazel-bin)
  bin=([fleet-controller]=$bazel_bin/controller/fleet-controller
    [fleet-agent]=$bazel_bin/agent/fleet-agent
    [fleetctl]=$bazel_bin/cli/fleetctl)
elif ((${#bin[@]} != 3)); then
  die "give --controller, --agent and --fleetctl together, or none of them"
fi
for name in "${!bin[@]}"; do
  [[ -x ${bin[$name]} ]] || die "$name binary ${bin[$name]} is not an executable file"
  bin[$name]=$(realpath "${bin[$name]}")
done
mkdir -p "$out"
out=$(realpath "$out")

# version_of HEADER CONSTANT NAME: the string constant's value in the
# header, or with --versions-from-binaries what binary NAME's --version says.
version_of() {
  if ((versions_from_binaries)); then
    "${bin[$3]}" --version 2>&1 | sed -nE "1s/^$3 ([^ ]+)\$/\\1/p"
  else
    sed -nE "s/.*$2\\[\\] = \"([^\"]+)\";.*/\\1/p" "$repo/$1"
  fi
}
declare -A version=(
  [fleet-controller]=$(version_of controller/version.h kControllerVersion fleet-controller)
  [fleet-agent]=$(version_of agent/version.h kAgentVersion fleet-agent)
  [fleetctl]=$(version_of cli/command_line.h kFleetctlVersion fleetctl)
)
declare -A summary=(
  [fleet-controller]="fleet control plane for software updates"
  [fleet-agent]="fleet agent: keeps one program up to date"
  [fleetctl]="command-line client for the fleet controller"
)
declare -A description=(
  [fleet-controller]=" The fleet controller stores signed releases, rolls them out to agents
 in stages with failure gates, and keeps their telemetry. Agents and
 fleetctl talk to it over gRPC with mutual TLS."
  [fleet-agent]=" The fleet agent keeps one program on this machine up to date: it
 downloads releases from the fleet controller, verifies their signature
 against keys pinned here, swaps the program atomically, restarts and
 health-checks it, and rolls back on failure."
  [fleetctl]=" fleetctl publishes signed releases, starts and watches rollouts, manages
 agents, enrollment tokens and certificates, and queries telemetry of a
 fleet controller."
)

arch=$(dpkg --print-architecture)
# The changelog's date: SOURCE_DATE_EPOCH for reproducible builds, else now.
changelog_date=$(date -u -R ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"})
maintainer="fleet maintainers <fleet@example.com>"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_package() {
  local name=$1 v=${version[$1]} tree="$work/$1/root" reported
  [[ -n $v ]] || die "no version constant found for $name"
  reported=$("${bin[$name]}" --version 2>&1 | head -n 1)
  [[ $reported == "$name $v" ]] ||
    die "${bin[$name]} --version says \"$reported\", the header says $v: rebuild it"

  install -d -m 0755 "$tree/DEBIAN" "$tree/usr/bin" "$tree/usr/share/man/man1" \
    "$tree/usr/share/doc/$name"
  # The agent's binary sits in a directory of its own, the one place under
  # /usr its unit may write (a self-update renames the new binary in there);
  # /usr/bin has a symlink.
  local installed=/usr/bin/$name
  if [[ $name == fleet-agent ]]; then
    installed=/usr/lib/fleet-agent/fleet-agent
    install -d -m 0755 "$tree/usr/lib/fleet-agent"
    ln -s ../lib/fleet-agent/fleet-agent "$tree/usr/bin/fleet-agent"
  fi
  install -m 0755 "${bin[$name]}" "$tree$installed"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$tree$installed"

  local conffile=""
  case $name in
  fleet-controller) conffile=controller.yaml ;;
  fleet-agent) conffile=agent.yaml ;;
  esac
  if [[ -n $conffile ]]; then
    install -d -m 0755 "$tree/etc/fleet" "$tree/lib/systemd/system"
    install -m 0644 "$repo/deploy/config/$conffile" "$tree/etc/fleet/$conffile"
    install -m 0644 "$repo/deploy/systemd/$name.service" \
      "$tree/lib/systemd/system/$name.service"
    echo "/etc/fleet/$conffile" >"$tree/DEBIAN/conffiles"
    chmod 0644 "$tree/DEBIAN/conffiles"
    local script
    for script in postinst prerm postrm; do
      install -m 0755 "$here/$name.$script" "$tree/DEBIAN/$script"
    done
  fi

  # Man page from --help. help2man runs the binary by its plain name from
  # PATH, so the page shows "fleet-agent", not the build path.
  mkdir -p "$work/$name/path"
  ln -sf "${bin[$name]}" "$work/$name/path/$name"
  PATH="$work/$name/path:$PATH" help2man --no-info --no-discard-stderr \
    --section 1 --name "${summary[$name]}" --version-string "$v" \
    --source "fleet $v" --output "$work/$name/$name.1" "$name" ||
    die "help2man failed for $name"
  gzip -9n <"$work/$name/$name.1" >"$tree/usr/share/man/man1/$name.1.gz"

  install -m 0644 "$here/copyright" "$tree/usr/share/doc/$name/copyright"
  printf '%s (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
    "$name" "$v" "$v" "$maintainer" "$changelog_date" |
    gzip -9n >"$tree/usr/share/doc/$name/changelog.gz"
  find "$tree/usr" -type f -exec chmod go-w {} +

  # Depends from the shared libraries the binary links (Debian's shlibs).
  mkdir -p "$work/$name/debian"
  : >"$work/$name/debian/control"
  local depends
  depends=$(cd "$work/$name" && dpkg-shlibdeps --warnings=0 -O \
    "$tree$installed" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
  [[ -n $depends ]] || die "dpkg-shlibdeps found no dependencies for $name"
  # postinst adds the fleet user: adduser, or useradd --prefix inside
  # DPKG_ROOT. deb-systemd-invoke comes from init-system-helpers, which is
  # Essential and so not listed.
  if [[ $name == fleet-controller ]]; then depends="adduser, passwd, $depends"; fi

  {
    echo "Package: $name"
    echo "Version: $v"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$tree" | cut -f1)"
    echo "Depends: $depends"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Homepage: https://fleet.example.com/"
    echo "Description: ${summary[$name]}"
    echo "${description[$name]}"
  } >"$tree/DEBIAN/control"

  dpkg-deb --root-owner-group -Zxz --build "$tree" \
    "$out/${name}_${v}_${arch}.deb" >/dev/null ||
    die "dpkg-deb failed for $name"
  echo "$out/${name}_${v}_${arch}.deb"
}

# dpkg-shlibdeps takes seconds per binary: build the three side by side.
pids=()
for name in fleet-controller fleet-agent fleetctl; do
  build_package "$name" >"$work/$name.done" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
((failed == 0)) || die "a package failed to build (see above)"
cat "$work"/*.done
