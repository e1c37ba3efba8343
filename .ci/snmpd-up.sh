#!/usr/bin/env bash
# Install Debian's net-snmp agent and tools (`snmpd`, `snmp`) for the switched-PDU tests
# (tests/pdu_snmp.rs, run with HASHSHIFT_SNMPD=1), and check that snmpd runs.
#
# The tests start their own private snmpd per test (tests/support/snmpd.rs: a generated
# config on 127.0.0.1 and a free port, a v2c community and a v3 authPriv user, the APC outlet
# table served by .ci/pdu-outlets.py through pass_persist); nothing is started here. The check
# below does the same on a scratch port for two seconds: the agent answers a v3 authPriv GET
# of the outlet table (SHA-256 + AES), so a broken package or python3 fails here, not in the
# tests. Idempotent; must run as root (apt-get).
set -euo pipefail

log() { printf 'snmpd-up: %s\n' "$*"; }
die() { printf 'snmpd-up: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

if ! command -v snmpd >/dev/null 2>&1 || ! command -v snmpget >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends snmpd snmp python3
fi
command -v python3 >/dev/null || die "python3 is missing (the pass_persist script needs it)"

here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

printf '1 on 12\n' >"$dir/outlets"
cat >"$dir/snmpd.conf" <<CONF
createUser ci-check SHA-256 "ci-check-auth" AES "ci-check-priv"
rouser ci-check priv
pass_persist .1.3.6.1.4.1.318.1.1.12.3 $here/pdu-outlets.py $dir/outlets
CONF
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SNMP_PERSISTENT_DIR="$dir/persist" MIBS="" snmpd -f -Lo -C -c "$dir/snmpd.conf" "udp:127.0.0.1:$port" >"$dir/log" 2>&1 &
pid=$!

for _ in 1 2 3 4 5 6 7 8 9 10; do
    if out=$(MIBS="" snmpget -On -r 0 -t 1 -v3 -l authPriv -u ci-check -a SHA-256 -A ci-check-auth \
            -x AES -X ci-check-priv "127.0.0.1:$port" .1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.1 2>&1); then
        case "$out" in
            *"INTEGER: 1"*) log "snmpd $(snmpd -v | awk '/version/ {print $NF; exit}') answers v3 authPriv on 127.0.0.1:$port"; exit 0 ;;
        esac
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; die "snmpd exited"; }
    sleep 0.2
done
cat "$dir/log" >&2
die "snmpd did not answer: ${out:-nothing}"
