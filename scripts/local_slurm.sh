#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying and testing `hydra/launcher=slurm`.
#
#   eval "$(bash scripts/local_slurm.sh up)"     # prints only `export SLURM_CONF=...` on stdout
#   bash scripts/local_slurm.sh status
#   bash scripts/local_slurm.sh down              # stops the daemons `up` started, by pid
#
#   LOCAL_SLURM_DIR=DIR   private state folder: config, munge key and socket, state, spool, logs,
#                         pid files (default ${XDG_STATE_HOME:-~/.local/state}/harness/slurm)
#   LOCAL_SLURM_GPUS=N    a fake GPU gres of N devices on the node (default 0: no gres). Jobs that
#                         ask for a GPU get CUDA_VISIBLE_DEVICES from it; there is no GPU behind it
#   LOCAL_SLURM_PORT=P    slurmctld listens on P, slurmd on P+1 (default 6817)
#
# Needs root (the daemons run as root) and Debian's slurmctld, slurmd, slurm-client and munge
# packages, which `up` installs with apt-get when they are missing (about 6 s). Nothing outside the
# state folder is written or started: munged runs with its own key and socket there (the packaged
# services stay stopped). `up` is idempotent: with the daemons running on the same config it only
# prints the exports; with another config it restarts them.
set -euo pipefail

DIR="${LOCAL_SLURM_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/harness/slurm}"
GPUS="${LOCAL_SLURM_GPUS:-0}"
PORT="${LOCAL_SLURM_PORT:-6817}"
NODE=localhost
PARTITION=local

log() { printf 'local_slurm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "needs root (the Slurm and munge daemons run as root)"; }

install_packages() {
    local missing=()
    for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
        [[ -x $b ]] || missing+=("$b")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "Slurm is not installed (${missing[*]}) and apt-get is not available"
    log "installing slurmctld slurmd slurm-client munge"
    # policy-rc.d keeps the packaged services from starting: only our daemons run.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurmctld slurmd slurm-client munge >&2 \
        || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends slurmctld slurmd slurm-client munge >&2; }
}

# pid of a daemon we started, when it still runs as that program (a reused pid is not ours).
alive() {
    local pidfile=$1 prog=$2 pid
    [[ -f $pidfile ]] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$prog" || return 1
    printf '%s\n' "$pid"
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc)
    # 80% of the memory, so that a request of "all of it" fits and one of more is refused.
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    local gres_line="" node_gres=""
    if ((GPUS > 0)); then
        gres_line="GresTypes=gpu"
        node_gres="Gres=gpu:$GPUS"
        mkdir -p "$DIR/dev"
        : >"$DIR/gres.conf.tmp"
        for ((i = 0; i < GPUS; i++)); do
            # Slurm wants a device node per GPU: a copy of /dev/null (nothing opens it).
            [[ -c $DIR/dev/nvidia$i ]] || mknod "$DIR/dev/nvidia$i" c 1 3
            echo "NodeName=$NODE Name=gpu File=$DIR/dev/nvidia$i" >>"$DIR/gres.conf.tmp"
        done
        mv "$DIR/gres.conf.tmp" "$DIR/gres.conf"
    else
        rm -f "$DIR/gres.conf"
    fi
    cat >"$DIR/slurm.conf.tmp" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster, state in $DIR
ClusterName=harness-local
SlurmctldHost=$NODE
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
SchedulerParameters=sched_interval=2
$gres_line
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb $node_gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if cmp -s "$DIR/slurm.conf.tmp" "$DIR/slurm.conf"; then
        rm -f "$DIR/slurm.conf.tmp"
        return 1   # unchanged
    fi
    mv "$DIR/slurm.conf.tmp" "$DIR/slurm.conf"
    return 0
}

start_munged() {
    alive "$DIR/munge/munged.pid" munged >/dev/null && return 0
    mkdir -p "$DIR/munge"
    chmod 700 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        head -c 1024 /dev/urandom >"$DIR/munge/munge.key.tmp"
        chmod 600 "$DIR/munge/munge.key.tmp"
        mv "$DIR/munge/munge.key.tmp" "$DIR/munge/munge.key"
    fi
    # --force: the socket's folder is private to root (munged wants it open to all users).
    /usr/sbin/munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start (see $DIR/log/munged.log)"
}

wait_idle() {
    local state="" i
    for ((i = 0; i < 150; i++)); do
        state=$(SLURM_CONF="$DIR/slurm.conf" sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        case $state in
            idle | mixed | allocated) return 0 ;;
        esac
        sleep 0.2
    done
    die "node $NODE is not idle after 30 s (state: ${state:-no answer}; see $DIR/log/)"
}

stop_pid() {
    local pidfile=$1 prog=$2 pid i
    pid=$(alive "$pidfile" "$prog") || { rm -f "$pidfile"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pidfile" "$prog" >/dev/null || break
        sleep 0.1
    done
    if alive "$pidfile" "$prog" >/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

cancel_jobs() {
    # Jobs of this cluster only (its own SLURM_CONF); their steps end before slurmd goes.
    local i
    SLURM_CONF="$DIR/slurm.conf" squeue -h -o %i 2>/dev/null | xargs -r env SLURM_CONF="$DIR/slurm.conf" scancel 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -z $(SLURM_CONF="$DIR/slurm.conf" squeue -h -o %i 2>/dev/null) ]] && return 0
        sleep 0.1
    done
}

cmd_down() {
    need_root
    if alive "$DIR/slurmctld.pid" slurmctld >/dev/null && alive "$DIR/slurmd.pid" slurmd >/dev/null; then
        cancel_jobs
    fi
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    stop_pid "$DIR/munge/munged.pid" munged
    log "stopped (state kept in $DIR)"
}

cmd_up() {
    need_root
    install_packages
    mkdir -p "$DIR/ctld" "$DIR/spool" "$DIR/log"
    local changed=0
    write_config && changed=1
    if ((changed)) && { alive "$DIR/slurmctld.pid" slurmctld >/dev/null || alive "$DIR/slurmd.pid" slurmd >/dev/null; }; then
        log "config changed: restarting the daemons"
        cancel_jobs
        stop_pid "$DIR/slurmd.pid" slurmd
        stop_pid "$DIR/slurmctld.pid" slurmctld
    fi
    [[ $changed -eq 1 ]] && rm -rf "${DIR:?}/ctld/"* "${DIR:?}/spool/"*   # no state of another config
    start_munged
    export SLURM_CONF="$DIR/slurm.conf"
    if ! alive "$DIR/slurmctld.pid" slurmctld >/dev/null; then
        /usr/sbin/slurmctld -f "$SLURM_CONF" -i || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
    fi
    if ! alive "$DIR/slurmd.pid" slurmd >/dev/null; then
        /usr/sbin/slurmd -f "$SLURM_CONF" -N "$NODE" || die "slurmd did not start (see $DIR/log/slurmd.log)"
    fi
    wait_idle
    log "node $NODE idle: partition $PARTITION, $(nproc) CPUs, ${GPUS} fake GPU(s); state in $DIR"
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF"
}

cmd_status() {
    local ok=0 p
    for p in "munge/munged.pid munged" "slurmctld.pid slurmctld" "slurmd.pid slurmd"; do
        set -- $p
        if pid=$(alive "$DIR/$1" "$2"); then
            log "$2 running (pid $pid)"
        else
            log "$2 not running"; ok=1
        fi
    done
    if ((ok == 0)); then
        SLURM_CONF="$DIR/slurm.conf" sinfo >&2 || ok=1
        printf 'export SLURM_CONF=%q\n' "$DIR/slurm.conf"
    fi
    return $ok
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
