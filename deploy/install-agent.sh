#!/usr/bin/env bash
# Installs fleet-agent on this machine from a package file, configures it to
# enroll with the fleet controller, and starts it: the one command for a new
# client machine.
#
# Usage: sudo deploy/install-agent.sh --package fleet-agent_VERSION_ARCH.deb \
#          --controller HOST:PORT --ca ca.crt --trust-key release.pub \
#          (--token TOKEN | --token-file FILE) --product NAME --exec PATH \
#          [--label KEY=VALUE]... [--root DIR] [--no-start] [-- PROGRAM ARGS]
#
#   --package FILE     the fleet-agent .deb (deploy/packaging/build-debs.sh)
#   --controller H:P   the controller's gRPC address
#   --ca FILE          the fleet CA certificate (pki/ca.crt from fleetctl pki init)
#   --trust-key FILE   release public key the agent pins; repeatable
#   --token TOKEN      one-time enrollment token (fleetctl enroll-token create)
#   --token-file FILE  the same, read from a file (keeps it out of ps)
#   --product NAME     the product this agent keeps up to date
#   --exec PATH        absolute path of the program's executable (may not exist yet)
#   --label KEY=VALUE  label rollouts select agents by; repeatable
#   --root DIR         install into DIR instead of / (dpkg --root with
#                      maintainer scripts acting inside DIR; never starts)
#   --no-start         write everything but do not enable or start the unit
#   -- ARGS            arguments for the managed program
#
# What it does: dpkg -i the package (apt-get install, which also fetches
# missing libraries, when installing into /); writes /etc/fleet/ca.crt,
# /etc/fleet/release.pub (and release-2.pub, ...), /etc/fleet/enroll-token
# (0600) and /etc/fleet/agent.yaml; checks the configuration with
# `fleet-agent --config /etc/fleet/agent.yaml --print-config`; then, when
# systemd runs, `systemctl enable fleet-agent` and (re)starts it. The agent
# enrolls on its first start and keeps its certificate in
# /var/lib/fleet-agent/identity.
#
# Exit status: 0 installed (and started); 1 a step failed (dpkg, the config
# check, systemctl), with the step named; 2 bad or missing arguments.
set -euo pipefail

usage_error() {
  echo "install-agent.sh: $*" >&2
  echo "Run 'install-agent.sh --help' for usage." >&2
  exit 2
}
die() {
  echo "install-agent.sh: $*" >&2
  exit 1
}

package="" controller="" ca="" token="" token_file="" product="" exec_path=""
root="" start=1
trust_keys=() labels=() program_args=()
while (($# > 0)); do
  case "$1" in
  --package | --controller | --ca | --trust-key | --token | --token-file | \
    --product | --exec | --label | --root)
    (($# >= 2)) || usage_error "$1 needs a value"
    case "$1" in
    --package) package=$2 ;;
    --controller) controller=$2 ;;
    --ca) ca=$2 ;;
    --trust-key) trust_keys+=("$2") ;;
    --token) token=$2 ;;
    --token-file) token_file=$2 ;;
    --product) product=$2 ;;
    --exec) exec_path=$2 ;;
    --label) labels+=("$2") ;;
    --root) root=$2 ;;
    esac
    shift 2
    ;;
  --no-start) start=0; shift ;;
  --) shift; program_args=("$@"); break ;;
  -h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
  *) usage_error "unknown argument \"$1\"" ;;
  esac
done

# Arguments, each with the fix in its message.
[[ -n $package ]] || usage_error "--package is required: the fleet-agent .deb file"
[[ -f $package ]] || usage_error "--package $package: no such file"
dpkg-deb -f "$package" Package 2>/dev/null | grep -qx fleet-agent ||
  usage_error "--package $package is not a fleet-agent package (dpkg-deb -f FILE Package)"
[[ -n $controller ]] || usage_error "--controller is required: HOST:PORT of the fleet controller, e.g. fleet.example.com:7443"
[[ $controller =~ ^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})$ ]] &&
  ((BASH_REMATCH[2] >= 1 && BASH_REMATCH[2] <= 65535)) ||
  usage_error "--controller \"$controller\" is not HOST:PORT (port 1-65535), e.g. fleet.example.com:7443"
[[ -n $ca ]] || usage_error "--ca is required: the fleet CA certificate (pki/ca.crt from fleetctl pki init)"
[[ -f $ca ]] || usage_error "--ca $ca: no such file"
openssl x509 -in "$ca" -noout 2>/dev/null ||
  usage_error "--ca $ca is not a PEM certificate; give pki/ca.crt from fleetctl pki init"
((${#trust_keys[@]} > 0)) || usage_error "--trust-key is required: the release public key (release.pub from fleetctl keys generate)"
for key in "${trust_keys[@]}"; do
  [[ -f $key ]] || usage_error "--trust-key $key: no such file"
  openssl pkey -pubin -in "$key" -noout 2>/dev/null ||
    usage_error "--trust-key $key is not a PEM public key; give release.pub, never release.key"
done
if [[ -n $token && -n $token_file ]]; then
  usage_error "give --token or --token-file, not both"
elif [[ -n $token_file ]]; then
  [[ -r $token_file ]] || usage_error "--token-file $token_file: cannot read it"
  token=$(tr -d ' \t\r\n' <"$token_file")
fi
[[ -n $token ]] || usage_error "--token or --token-file is required: a one-time token from 'fleetctl enroll-token create'"
[[ $token =~ ^[A-Za-z0-9._~+/=-]+$ ]] || usage_error "the enrollment token has characters a token never has; copy it again"
[[ -n $product ]] || usage_error "--product is required: the product this agent keeps up to date"
[[ $product =~ ^[a-z0-9][a-z0-9._-]*$ ]] ||
  usage_error "--product \"$product\": use lower-case letters, digits, '.', '_' and '-'"
[[ $exec_path == /* ]] || usage_error "--exec \"$exec_path\" must be an absolute path, e.g. /opt/app/bin/app"
for label in "${labels[@]}"; do
  [[ $label =~ ^[A-Za-z0-9._/-]+=[A-Za-z0-9._/-]*$ ]] ||
    usage_error "--label \"$label\" is not KEY=VALUE"
done
if [[ -n $root ]]; then
  [[ -d $root ]] || usage_error "--root $root: no such directory"
  root=$(realpath "$root")
  start=0
fi
if ((EUID != 0)); then
  die "must run as root (it installs a package and writes /etc/fleet): sudo $0 ..."
fi

# 1. The package.
if [[ -n $root ]]; then
  dpkg --root="$root" --force-script-chrootless -i "$package" >/dev/null ||
    die "dpkg --root=$root -i $package failed (see above)"
elif command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o Dpkg::Options::=--force-confold "$(realpath "$package")" >/dev/null ||
    die "apt-get install $package failed (see above); dpkg -i shows which library is missing"
else
  dpkg -i "$package" >/dev/null || die "dpkg -i $package failed (see above)"
fi
echo "installed $(dpkg-deb -f "$package" Package) $(dpkg-deb -f "$package" Version)"

# 2. Files, each written beside its place and renamed in, so a failure
# leaves the old one.
etc=$root/etc/fleet
install -d -m 0755 "$etc"
place() { # place MODE SOURCE DEST
  install -m "$1" "$2" "$3.new" && mv -f "$3.new" "$3"
}
place 0644 "$ca" "$etc/ca.crt"
key_paths=()
for i in "${!trust_keys[@]}"; do
  name=release.pub
  ((i == 0)) || name=release-$((i + 1)).pub
  place 0644 "${trust_keys[$i]}" "$etc/$name"
  key_paths+=("/etc/fleet/$name")
done
(umask 077 && printf '%s\n' "$token" >"$etc/enroll-token.new")
chmod 0600 "$etc/enroll-token.new"
mv -f "$etc/enroll-token.new" "$etc/enroll-token"

# YAML double-quoted scalars: backslash and quote escaped.
quote() {
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}
yaml_list() { # yaml_list KEY ITEMS...
  local key=$1 item
  shift
  (($# > 0)) || return 0
  echo "$key:"
  for item in "$@"; do echo "  - $(quote "$item")"; done
}
{
  echo "# /etc/fleet/agent.yaml, written by install-agent.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
  echo "# Every key: /usr/share/doc/fleet-agent and deploy/config/agent.yaml;"
  echo "# check a change with: fleet-agent --config /etc/fleet/agent.yaml --print-config"
  echo "controller: $(quote "$controller")"
  echo "state-dir: /var/lib/fleet-agent"
  yaml_list trust-key "${key_paths[@]}"
  echo "tls-ca: /etc/fleet/ca.crt"
  echo "# Used on the first start only; the certificate is then in"
  echo "# /var/lib/fleet-agent/identity and this file may be deleted."
  echo "enroll-token-file: /etc/fleet/enroll-token"
  echo "product: $(quote "$product")"
  echo "exec: $(quote "$exec_path")"
  yaml_list label "${labels[@]}"
  yaml_list program_args "${program_args[@]}"
} >"$etc/agent.yaml.new"
chmod 0644 "$etc/agent.yaml.new"

# 3. The agent must accept it. Under --root the file names /etc/fleet/...
# of the target system, so the check reads a copy pointing into the root.
check=$etc/agent.yaml.new
if [[ -n $root ]]; then
  check=$(mktemp)
  sed "s|\"/etc/fleet/|\"$root/etc/fleet/|; s|: /etc/fleet/|: $root/etc/fleet/|; s|^state-dir: /|state-dir: $root/|" \
    "$etc/agent.yaml.new" >"$check"
fi
if ! "$root/usr/bin/fleet-agent" --config "$check" --print-config >/dev/null 2>"$etc/agent.yaml.err"; then
  cat "$etc/agent.yaml.err" >&2
  rm -f "$etc/agent.yaml.err"
  [[ $check == "$etc/agent.yaml.new" ]] || rm -f "$check"
  die "fleet-agent refused the configuration written to $etc/agent.yaml.new (above); /etc/fleet/agent.yaml is unchanged"
fi
rm -f "$etc/agent.yaml.err"
[[ $check == "$etc/agent.yaml.new" ]] || rm -f "$check"
mv -f "$etc/agent.yaml.new" "$etc/agent.yaml"
echo "wrote /etc/fleet/agent.yaml, ca.crt, ${key_paths[*]##*/}, enroll-token (0600)"

# 4. Start.
if ((start == 0)); then
  echo "not started${root:+ (installed into $root)}; on the machine run: systemctl enable --now fleet-agent"
elif [[ ! -d /run/systemd/system ]]; then
  echo "systemd is not running here: start the agent with" \
    "/usr/bin/fleet-agent --config /etc/fleet/agent.yaml"
else
  systemctl daemon-reload
  systemctl enable fleet-agent.service >/dev/null 2>&1 ||
    die "systemctl enable fleet-agent failed; see systemctl status fleet-agent"
  systemctl restart fleet-agent.service ||
    die "fleet-agent did not start; see journalctl -u fleet-agent -n 50"
  echo "started fleet-agent; it enrolls with $controller on its first start:" \
    "journalctl -u fleet-agent -f, then fleetctl agents list on the operator's machine"
fi
