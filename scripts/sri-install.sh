#!/usr/bin/env bash
# Installs the SRI binaries pinned in tests/sri_interop/sri-versions.txt (pool_sv2,
# translator_sv2, and mining_device from integration_tests_sv2) with
#   cargo install --locked --version V --root "$HASHSHIFT_SRI_CACHE" CRATE
# into a cache folder outside the repository (default ~/.cache/hashshift/sri). A crate already
# installed there at its pinned version is not rebuilt, so a second run takes a second.
# pool_sv2 needs Cap'n Proto (Debian: capnproto libcapnp-dev), installed here when missing
# and this runs as root (or with sudo -n).
#
# Prints nothing else on stdout but, on its last line, the folder holding the binaries:
#   export SRI_BIN="$(scripts/sri-install.sh | tail -n1)"
# Build output goes to "$HASHSHIFT_SRI_CACHE/logs/<crate>.log"; a failed build prints its tail.
# The crates are built one after the other into one target folder (they share most of their
# dependencies), which is deleted when all are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${HASHSHIFT_SRI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hashshift/sri}"
mkdir -p "$cache/logs"

installed() { # crate version: whether cargo's install record has exactly this version
  grep -qs "^\"$1 $2 (registry+" "$cache/.crates.toml"
}

todo=()
while read -r crate version _bins; do
  case "$crate" in ''|'#'*) continue ;; esac
  installed "$crate" "$version" || todo+=("$crate@$version")
done < tests/sri_interop/sri-versions.txt

if [ "${#todo[@]}" -ne 0 ]; then
  if ! command -v capnp >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO="sudo -n"; fi
    echo "installing capnproto for pool_sv2" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      capnproto libcapnp-dev >&2
  fi
  for spec in "${todo[@]}"; do
    crate="${spec%@*}" version="${spec#*@}"
    start=$(date +%s)
    echo "building SRI $crate $version into $cache (minutes)" >&2
    if ! CARGO_TARGET_DIR="$cache/target" cargo install --locked --force --quiet \
         --root "$cache" --version "$version" "$crate" >"$cache/logs/$crate.log" 2>&1; then
      tail -n 40 "$cache/logs/$crate.log" >&2
      echo "cargo install $crate $version failed (log: $cache/logs/$crate.log)" >&2
      exit 1
    fi
    echo "built SRI $crate $version in $(( $(date +%s) - start )) s" >&2
  done
  rm -rf "$cache/target"
fi
echo "$cache/bin"
