#!/usr/bin/env bash
# Start a one-member etcd on 127.0.0.1:2379 for the cluster tests (tests/cluster.rs and the
# proxy's `cluster::` unit tests, run with `--features etcd` and HASHSHIFT_ETCD=1).
#
# Debian's etcd-server and etcd-client must be installed (.ci/run does that as root); this
# script needs no root. A no-op when an etcd already answers `endpoint health` there. Otherwise
# it starts one in the background (data and log under /tmp/hashshift-ci-etcd, peer port 2380,
# loopback only) and waits until it is healthy. It stays up after the script ends: the tests
# run after it. Stop it with `kill "$(cat /tmp/hashshift-ci-etcd/pid)"`.
# Tests that need a three-member cluster or a private etcd start their own on free ports.
set -euo pipefail

log() { printf 'etcd-up: %s\n' "$*"; }
die() { printf 'etcd-up: ERROR: %s\n' "$*" >&2; exit 1; }

endpoint="http://127.0.0.1:2379"
peer="http://127.0.0.1:2380"
dir="/tmp/hashshift-ci-etcd"

command -v etcd >/dev/null 2>&1 || die "etcd is missing (apt-get install etcd-server)"
command -v etcdctl >/dev/null 2>&1 || die "etcdctl is missing (apt-get install etcd-client)"

# etcd 3.4's etcdctl speaks v3 by default; said anyway, as older ones did not.
healthy() { ETCDCTL_API=3 etcdctl --endpoints="$endpoint" --command-timeout=2s endpoint health >/dev/null 2>&1; }

if healthy; then
    log "an etcd already answers on $endpoint"
    exit 0
fi

mkdir -p "$dir"
# A data directory left by an earlier run is reused: same name, same URLs, same member.
# setsid + nohup: the member outlives this script and the CI step that ran it.
setsid nohup etcd --name hashshift-ci --data-dir "$dir/data" \
    --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "hashshift-ci=$peer" \
    --logger zap --log-level warn >"$dir/log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/pid"

# A fresh member elects itself within a second or two; 20 s covers a slow, busy CI machine.
for _ in $(seq 1 100); do
    if healthy; then
        log "etcd $(etcd --version | awk '/etcd Version/ {print $NF; exit}') is healthy on $endpoint (pid $pid, $dir)"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; die "etcd exited (is port 2379 or 2380 taken?)"; }
    sleep 0.2
done
cat "$dir/log" >&2
die "etcd did not become healthy on $endpoint within 20 s"
