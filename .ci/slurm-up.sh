#!/usr/bin/env bash
# Install and start a one-node Slurm on this machine, without systemd, for the GPU-scheduler
# tests (tests/slurm.rs, run with HASHSHIFT_SLURM=1).
#
# - Debian bookworm packages `slurmctld slurmd slurm-client munge` (Slurm 22.05), not the
#   `slurm-wlm` metapackage (it pulls many plugins we do not need).
# - munged runs as the munge user with the package's key (created if missing).
# - One node named after `hostname -s`, CPUs = nproc, RealMemory from `slurmd -C`,
#   select/cons_tres, proctrack/linuxproc, task/none, no accounting, and the cluster-wide
#   power budget as licenses: Licenses=power_kw:$HASHSHIFT_SLURM_POWER_KW (default 100).
# - Idempotent: when the node already answers idle/mixed/allocated and the license exists,
#   it prints so and exits 0 without touching anything.
# - Bounded: waits at most $HASHSHIFT_SLURM_WAIT_SECS (default 60) for the node to be idle.
#
# Must run as root (apt-get, daemons). Logs: /var/log/slurm/{slurmctld,slurmd}.log,
# /var/log/munge/munged.log.
set -euo pipefail

POWER_KW="${HASHSHIFT_SLURM_POWER_KW:-100}"
WAIT_SECS="${HASHSHIFT_SLURM_WAIT_SECS:-60}"
NODE="$(hostname -s)"
CONF=/etc/slurm/slurm.conf
start_ts=$(date +%s.%N)

log() { printf 'slurm-up: %s\n' "$*"; }
die() { printf 'slurm-up: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true; }
has_license() { scontrol show license 2>/dev/null | grep -q "LicenseName=power_kw"; }
pid_alive() { local pid; pid="$(cat "$1" 2>/dev/null || true)"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
# slurmctld keeps calling a node idle for SlurmdTimeout after its slurmd died: check the daemons.
daemons_alive() {
    pid_alive /run/slurm/slurmctld.pid && pid_alive /run/slurm/slurmd.pid \
        && munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

# Already up? A second run is a no-op.
if command -v sinfo >/dev/null 2>&1 && [ -f "$CONF" ]; then
    st="$(node_state)"
    case "$st" in
        idle* | mixed* | allocated* | completing*)
            if has_license && daemons_alive; then
                log "already up (node $NODE is $st); nothing to do"
                exit 0
            fi
            ;;
    esac
fi

# 1. Packages.
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
    || ! command -v sinfo >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. munge: key, run dir, daemon as the munge user.
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    pkill_pid="$(cat /run/munge/munged.pid 2>/dev/null || true)"
    if [ -n "$pkill_pid" ] && kill -0 "$pkill_pid" 2>/dev/null; then kill "$pkill_pid" || true; fi
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# 3. slurm.conf (one node, licenses as the power budget).
install -d -o slurm -g slurm -m 0755 /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm /run/slurm
install -d -o root -g root -m 0755 /var/lib/slurm/slurmd
CPUS="$(nproc)"
# RealMemory must not exceed what slurmd sees, or the node goes INVALID.
MEM="$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)"
[ -n "$MEM" ] || MEM=1000
MEM=$((MEM > 1100 ? MEM - 100 : MEM))
cat >"$CONF" <<EOF
# Written by hashshift .ci/slurm-up.sh: a one-node test cluster.
ClusterName=hashshift
SlurmctldHost=$NODE
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# The site's GPU power budget, in kW, as a cluster-wide license (hashshift holds the part it
# does not grant in a license-only reservation).
Licenses=power_kw:$POWER_KW
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=gpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# 4. Daemons: stop ours if half-up, then slurmctld, then slurmd.
stop_pidfile() {
    local pid
    pid="$(cat "$1" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
}
stop_pidfile /run/slurm/slurmd.pid
stop_pidfile /run/slurm/slurmctld.pid
log "starting slurmctld and slurmd (node $NODE, CPUs=$CPUS, RealMemory=$MEM, power_kw:$POWER_KW)"
slurmctld
for _ in $(seq 1 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
slurmd

# 5. Wait (bounded) until the node is idle.
deadline=$(($(date +%s) + WAIT_SECS))
while :; do
    st="$(node_state)"
    case "$st" in
        idle* | mixed* | allocated*) break ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        sinfo -N -l || true
        tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
        die "node $NODE not idle after ${WAIT_SECS}s (state: '${st:-none}')"
    fi
    # A node that registered DOWN (e.g. after a config change) is brought back.
    case "$st" in
        down* | drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
has_license || die "license power_kw missing from scontrol show license"
end_ts=$(date +%s.%N)
log "up: node $NODE $(node_state), $(scontrol show license | grep -o 'Total=[0-9]*') power_kw, in $(awk "BEGIN{printf \"%.1f\", $end_ts - $start_ts}")s"
