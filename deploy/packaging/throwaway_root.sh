# Sourced by the package tests: a throw-away root for `dpkg --root`.
#
#   source throwaway_root.sh
#   run_as_root_or_fakeroot "$0" "$@"   # first thing in the test
#   make_throwaway_root "$tmp/root"
#   dpkg --root="$tmp/root" --force-script-chrootless -i pkg.deb
#   host_state                          # before and after: must not change

# Re-executes the calling script under fakeroot where root cannot give
# files away: not root at all, or Bazel's sandbox, whose user namespace maps
# uid 0 only (chown to any other uid fails with EINVAL, which fakeroot
# passes on unless FAKEROOTDONTTRYCHOWN is set). Under fakeroot owners are
# recorded, not set, and stat in the same session reports them.
run_as_root_or_fakeroot() {
  [[ -z ${FLEET_UNDER_FAKEROOT:-} ]] || return 0
  local probe
  probe=$(mktemp "${TEST_TMPDIR:-/tmp}/chown.XXXXXX")
  if chown 4242:4242 "$probe" 2>/dev/null; then
    rm -f "$probe"
    return 0
  fi
  rm -f "$probe"
  command -v fakeroot >/dev/null || {
    echo "FAIL: cannot chown and no fakeroot (deploy/setup.sh installs it)" >&2
    exit 1
  }
  echo "note: cannot chown here; running under fakeroot"
  FLEET_UNDER_FAKEROOT=1 FAKEROOTDONTTRYCHOWN=1 exec fakeroot -- bash "$@"
}

# make_throwaway_root DIR: a dpkg database that knows this machine's
# packages (so Depends are checked against what is really installed, and
# the packaged binaries run with these libraries) and a passwd/group/shadow
# holding only root, for useradd --prefix.
make_throwaway_root() {
  local root=$1
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" \
    "$root/var/log" "$root/etc"
  cp /var/lib/dpkg/status "$root/var/lib/dpkg/status"
  echo 'root:x:0:0:root:/root:/bin/bash' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  echo 'root:*:19000:0:99999:7:::' >"$root/etc/shadow"
  echo 'root:*::' >"$root/etc/gshadow"
  chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
}

# A digest of what a package install on the host would change; the tests
# compare it before and after to prove the host was not touched.
host_state() { cat /etc/passwd /etc/group /var/lib/dpkg/status | sha256sum; }
