#!/usr/bin/env bash
# Makes a Slurm cluster available to the Slurm executor's tests. Idempotent: run it as often
# as you like; it only does what is missing.
#
#   eval "$(bash scripts/setup-slurm.sh)"
#
# Prints one line on stdout, `export SLURM_CONF=PATH`, for the caller to eval (everything
# else goes to stderr), and exits non-zero, saying why, when no cluster can be had: the Slurm
# tests never skip.
#
# 1. A cluster that answers already (`sinfo` through $SLURM_CONF or Slurm's default
#    configuration) and has a node that can run jobs (idle, mixed or allocated) is used as it
#    is: a developer's or CI's real cluster. The printed SLURM_CONF is the one in use.
# 2. Otherwise a one-node cluster is made on this machine (needs root):
#    - `slurm-wlm` and `munge` are installed when missing (apt-get);
#    - its files live in $DSTACK_SLURM_DIR (default /var/tmp/dstack-slurm): slurm.conf, state,
#      spool, logs, pid files. The folder survives reboots on most systems, so job ids keep
#      increasing from one start to the next;
#    - one node named after `hostname -s`, declared with at least 8 CPUs (more than a small
#      machine has, with `SlurmdParameters=config_overrides`, so that several test jobs run
#      at once), 90% of the machine's memory and 256 MB per CPU by default; no GPUs
#      (`--gres=gpu:1` is refused, as on a cluster without them); accounting off (nothing
#      needs `sacct`); finished jobs kept 10 minutes (`MinJobAge`). A configuration that
#      changed since the last run restarts the daemons this script started;
#    - a munge key is created when there is none, then munged, slurmctld and slurmd are
#      started in the background (each its own session, so they outlive this script);
#    - the script waits until the node is idle.
#    Slurm's default configuration path (`/etc/slurm/slurm.conf`) is left alone when it exists;
#    when it does not, a symbolic link to our slurm.conf is put there, so that `sinfo` in a new
#    shell (and `cargo test` without the eval) reach the same cluster. Remove the link to undo.
set -euo pipefail

DIR=${DSTACK_SLURM_DIR:-/var/tmp/dstack-slurm}
CONF=$DIR/slurm.conf
DEFAULT_CONF=/etc/slurm/slurm.conf

say() { printf 'setup-slurm: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# Whether the cluster of SLURM_CONF (or the default one) answers and has a usable node.
usable() {
    local states
    states=$(timeout 10 sinfo --noheader --format='%T' 2>/dev/null) || return 1
    grep -Eq '^(idle|mixed|allocated|completing)' <<<"$states"
}

done_with() {
    printf 'export SLURM_CONF=%q\n' "$1"
    exit 0
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root; start a Slurm cluster yourself (or ask your administrator) and set SLURM_CONF"
    fi
}

apt_install() {
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null || die "apt-get update failed"
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

ours() { [[ $1 == "$CONF" || $(readlink -f "$1" 2>/dev/null) == "$(readlink -f "$CONF")" ]]; }

# 1. A cluster that answers already (not ours: ours is checked against its configuration below).
if command -v sinfo >/dev/null 2>&1; then
    if [[ -n ${SLURM_CONF:-} ]] && ! ours "$SLURM_CONF" && usable; then
        say "the cluster of SLURM_CONF=$SLURM_CONF answers"
        done_with "$SLURM_CONF"
    fi
    if [[ -z ${SLURM_CONF:-} && -e $DEFAULT_CONF ]] && ! ours "$DEFAULT_CONF" && usable; then
        say "the cluster of Slurm's default configuration answers"
        done_with "$DEFAULT_CONF"
    fi
fi

# 2. Our own one-node cluster.
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 ||
    ! command -v sbatch >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 ||
        die "Slurm is not installed and there is no apt-get: install slurm-wlm and munge, or set SLURM_CONF to your cluster's slurm.conf"
    apt_install slurm-wlm munge
fi
command -v munged >/dev/null 2>&1 || apt_install munge

host=$(hostname -s)
cpus=$(nproc)
((cpus < 8)) && cpus=8
memory_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
as_root mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
conf_text=$(
    cat <<EOF
# Written by dstack-rs scripts/setup-slurm.sh: a one-node cluster for tests.
ClusterName=dstack-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
MaxJobCount=100000
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
# The daemons started by an earlier run of this script, from their pid files.
running() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}
if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$conf_text" ]]; then
    printf '%s\n' "$conf_text" | as_root tee "$CONF" >/dev/null
    say "wrote $CONF"
    # A changed configuration needs the daemons restarted (node definitions are read at start).
    for daemon in slurmd slurmctld; do
        if running "$DIR/run/$daemon.pid"; then
            say "stopping $daemon to apply the new configuration"
            pid=$(cat "$DIR/run/$daemon.pid")
            as_root kill "$pid"
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
    done
elif SLURM_CONF=$CONF usable; then
    say "the one-node cluster of $CONF answers"
    done_with "$CONF"
fi
if [[ ! -e $DEFAULT_CONF && ! -L $DEFAULT_CONF ]]; then
    as_root mkdir -p "$(dirname "$DEFAULT_CONF")"
    as_root ln -s "$CONF" "$DEFAULT_CONF"
    say "linked $DEFAULT_CONF -> $CONF (Slurm's default configuration was absent)"
fi

# munge: a key, then the daemon.
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating the munge key"
    as_root mkdir -p /etc/munge
    as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
as_root chown munge:munge /etc/munge/munge.key 2>/dev/null || true
as_root chmod 400 /etc/munge/munge.key
as_root mkdir -p /run/munge /var/log/munge /var/lib/munge
as_root chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! munge -n </dev/null >/dev/null 2>&1; then
    say "starting munged"
    if id munge >/dev/null 2>&1; then
        as_root setsid runuser -u munge -- munged </dev/null >/dev/null 2>&1 ||
            as_root setsid munged --force </dev/null >/dev/null 2>&1 || true
    else
        as_root setsid munged --force </dev/null >/dev/null 2>&1 || true
    fi
    for _ in $(seq 1 50); do
        munge -n </dev/null >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# The daemons: started when their pid file names no live process.
export SLURM_CONF=$CONF
if ! running "$DIR/run/slurmctld.pid"; then
    say "starting slurmctld (log: $DIR/log/slurmctld.log)"
    as_root setsid slurmctld -f "$CONF" </dev/null >/dev/null 2>&1
fi
if ! running "$DIR/run/slurmd.pid"; then
    say "starting slurmd (log: $DIR/log/slurmd.log)"
    as_root setsid slurmd -f "$CONF" </dev/null >/dev/null 2>&1
fi

for i in $(seq 1 120); do
    if usable; then
        say "ready: node $host is $(sinfo --noheader --format='%T' | head -n 1) ($(sinfo --version))"
        done_with "$CONF"
    fi
    # A node left down or drained by an earlier start is brought back.
    if ((i % 10 == 0)); then
        state=$(sinfo --noheader --format='%T' 2>/dev/null | head -n 1 || true)
        case $state in
        down* | drain* | fail*)
            say "node $host is $state: resuming it"
            scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
            ;;
        esac
    fi
    sleep 0.5
done
say "the last lines of $DIR/log/slurmctld.log:"
tail -n 15 "$DIR/log/slurmctld.log" >&2 || true
say "the last lines of $DIR/log/slurmd.log:"
tail -n 15 "$DIR/log/slurmd.log" >&2 || true
die "the node did not become idle within 60 s (sinfo: $(sinfo 2>&1 | tail -n +2 | head -n 3))"
