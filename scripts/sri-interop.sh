#!/usr/bin/env bash
# Interop with the Stratum Reference Implementation's binaries (manual; not run by CI).
#
# Runs the #[ignore] tests of tests/sri_interop.rs, which start hashshift in-process and SRI's
# binaries as child processes, all on 127.0.0.1:
#   a. SRI mining_device (SV2 CPU miner, standard channel) -> hashshift SV2 downstream
#      -> hashshift's SV1 test pool: the pool accepts mining_device's shares;
#   b. an SV1 test miner -> SRI translator_sv2 -> hashshift SV2 downstream -> test pool;
#   c. an SV1 test miner -> hashshift SV2 upstream -> SRI pool_sv2, fed by the test template
#      provider in tests/support/template_provider.rs: pool_sv2 accepts the shares.
#
# The binaries are built once (each takes minutes) into ${SRI_ROOT:-/work/sri}/bin with
#   cargo install --locked --root "$SRI_ROOT" pool_sv2 translator_sv2 integration_tests_sv2
# (integration_tests_sv2 provides mining_device; pool_sv2 needs the Debian packages
# capnproto and libcapnp-dev). Set SRI_SKIP_BUILD=1 to only run the tests.
#
# Usage: scripts/sri-interop.sh [extra cargo test filter]
set -euo pipefail

SRI_ROOT="${SRI_ROOT:-/work/sri}"
export SRI_BIN="$SRI_ROOT/bin"
cd "$(dirname "$0")/.."

missing=()
for b in pool_sv2 translator_sv2 mining_device; do
  [ -x "$SRI_BIN/$b" ] || missing+=("$b")
done

if [ "${#missing[@]}" -ne 0 ]; then
  if [ "${SRI_SKIP_BUILD:-0}" = 1 ]; then
    echo "missing SRI binaries in $SRI_BIN: ${missing[*]} (SRI_SKIP_BUILD=1, not building)" >&2
    exit 1
  fi
  if ! command -v capnp > /dev/null; then
    echo "pool_sv2 needs capnproto: sudo apt-get install capnproto libcapnp-dev" >&2
    exit 1
  fi
  crates=()
  for b in "${missing[@]}"; do
    case "$b" in
      mining_device) crates+=(integration_tests_sv2) ;;
      *) crates+=("$b") ;;
    esac
  done
  echo "building SRI's ${crates[*]} into $SRI_ROOT (several minutes each)"
  # A target dir of its own, so the project's build cache is left alone.
  for c in "${crates[@]}"; do
    CARGO_TARGET_DIR="$SRI_ROOT/target" cargo install --locked --root "$SRI_ROOT" "$c"
  done
fi

cargo test --test sri_interop -- --ignored --test-threads=1 --nocapture "$@"
