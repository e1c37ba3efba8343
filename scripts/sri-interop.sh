#!/usr/bin/env bash
# Runs hashshift's interop flows against the Stratum Reference Implementation's own binaries
# (tests/sri_interop.rs; the list of flows is in its module doc), as CI does.
#
# The binaries are installed first, at the versions pinned in tests/sri_interop/sri-versions.txt,
# by scripts/sri-install.sh (once: about 25 minutes on 2 cores; reused from its cache after).
# HASHSHIFT_SRI=1 makes a missing binary fail the flows instead of skipping them.
#
# Usage: scripts/sri-interop.sh [cargo test filter, e.g. chain]
set -euo pipefail
cd "$(dirname "$0")/.."

SRI_BIN="$(scripts/sri-install.sh | tail -n1)"
export SRI_BIN HASHSHIFT_SRI=1
cargo test --locked --test sri_interop -- --nocapture "$@"
