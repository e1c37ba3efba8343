#!/usr/bin/env bash
# Optional, manual interop check against the Stratum Reference Implementation (SRI).
# Not run by CI or `cargo test`: it needs SRI processes that take minutes to build.
#
# Section "hashshift SV2 upstream -> SRI pool_sv2"
#   Prerequisites (see /work/shared/SV2-NOTES.md):
#     - a template provider (Bitcoin Core with SV2 template distribution, e.g. sv2-tp on
#       regtest/signet) and `pool_sv2` (0.7) running with its example config, which listens on
#       127.0.0.1:34254 with the authority key below (pool-config-example.toml);
#     - `cargo build --release` of hashshift.
#   What it checks: the proxy authenticates the pool (Noise, pinned authority key), sets up
#   the connection, opens an extended channel, receives a job (future job + SetNewPrevHash),
#   and publishes it to the proxy's miners. Shares are not checked: SRI derives the channel's target from
#   the announced nominal hash rate (100 TH/s), far above what the load generator hashes.
#
#   Usage: scripts/sri-interop.sh [POOL_ADDR] [AUTHORITY_PUBKEY]
set -euo pipefail

POOL_ADDR="${1:-127.0.0.1:34254}"
AUTHORITY="${2:-9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72}"
BIN="${HASHSHIFT_BIN:-target/release/hashshift}"
LISTEN="127.0.0.1:34335"
WORK="$(mktemp -d)"
trap 'kill "${PROXY_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cat > "$WORK/config.toml" <<TOML
[[downstream]]
protocol = "sv1"
listen = "$LISTEN"

[[upstream]]
url = "stratum2+tcp://$POOL_ADDR/$AUTHORITY"
user = "hashshift-interop"
priority = 0
TOML

"$BIN" check-config "$WORK/config.toml" > /dev/null
RUST_LOG=hashshift=debug "$BIN" run --config "$WORK/config.toml" 2> "$WORK/proxy.log" &
PROXY_PID=$!

# Wait up to 30 s for the channel and the first job.
for _ in $(seq 1 60); do
  if grep -q "new job" "$WORK/proxy.log"; then break; fi
  sleep 0.5
done

status=0
grep -q "channel open" "$WORK/proxy.log" || { echo "FAIL: no extended channel opened"; status=1; }
grep -q "new job" "$WORK/proxy.log" || { echo "FAIL: no job from the pool"; status=1; }
if grep -q "failed Noise authentication" "$WORK/proxy.log"; then
  echo "FAIL: the pool did not authenticate with $AUTHORITY"; status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- proxy log ---"; tail -n 50 "$WORK/proxy.log"
else
  echo "OK: hashshift authenticated pool_sv2 at $POOL_ADDR, opened a channel and got work"
  grep -m1 "channel open" "$WORK/proxy.log"
fi
exit "$status"
