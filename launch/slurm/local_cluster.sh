#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and for trying the sbatch script.
#
#   launch/slurm/local_cluster.sh          # install if missing, configure, start, wait until idle
#   launch/slurm/local_cluster.sh stop     # stop slurmd, slurmctld and munged
#   launch/slurm/local_cluster.sh status   # sinfo
#
# Needs root (apt-get, daemons). Works without systemd and without cgroups (containers, gVisor):
# daemons are started directly, process tracking is proctrack/linuxproc, no task plugin. The node
# gets this machine's real CPUs and memory (`slurmd -C`) and is named after `hostname -s`, with
# every address on 127.0.0.1. Idempotent: running it again with the cluster up does nothing.
# SlurmUser is root: this is a throwaway test cluster, not a template for a real one.
set -euo pipefail

STATE=${GPPF_SLURM_STATE:-/var/lib/gppf-slurm}
LOGS=${GPPF_SLURM_LOGS:-/var/log/gppf-slurm}
RUNDIR=/run/gppf-slurm
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)
PARTITION=${GPPF_SLURM_PARTITION:-debug}

log() { echo "local_cluster: $*" >&2; }

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (installs packages, starts munged/slurmctld/slurmd)"
    exit 1
  fi
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1; }

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /etc/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
  fi
  munge -n </dev/null | unmunge >/dev/null
}

write_conf() {
  local hw cpus sockets cores threads mem
  hw=$(slurmd -C | head -n1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")
  cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")
  threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d" "$LOGS" "$RUNDIR"
  local tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# Written by gppf_dist launch/slurm/local_cluster.sh: a one-node test cluster on localhost.
ClusterName=gppf-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups in containers: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=600
KillWait=30
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "$tmp" "$CONF"; then
    log "writing $CONF (node $NODE: $cpus CPUs, $mem MB)"
    mv "$tmp" "$CONF"
    chmod 0644 "$CONF"
    return 0
  fi
  rm -f "$tmp"
  return 1
}

wait_idle() {
  local state=""
  for _ in $(seq 1 60); do
    state=$(node_state)
    case $state in
      idle | mix | alloc) log "node $NODE is $state"; return 0 ;;
      down* | drain* | inval*)
        scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  log "node $NODE did not become idle (state '${state:-none}'); see $LOGS/*.log"
  return 1
}

start() {
  need_root
  install_packages
  start_munge
  local changed=0
  write_conf && changed=1
  if ((changed)) && running "$RUNDIR/slurmctld.pid"; then
    log "configuration changed: restarting the daemons"
    stop_slurm
  fi
  if ! running "$RUNDIR/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld
  fi
  for _ in $(seq 1 30); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
  if ! running "$RUNDIR/slurmd.pid"; then
    log "starting slurmd"
    slurmd
  fi
  wait_idle
}

stop_slurm() {
  local pidfile
  for pidfile in "$RUNDIR/slurmd.pid" "$RUNDIR/slurmctld.pid"; do
    if running "$pidfile"; then
      kill -TERM "$(cat "$pidfile")"
      for _ in $(seq 1 30); do running "$pidfile" || break; sleep 0.5; done
    fi
    rm -f "$pidfile"
  done
}

stop() {
  need_root
  stop_slurm
  munged --stop >/dev/null 2>&1 || true
  log "stopped"
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
