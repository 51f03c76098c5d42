#!/usr/bin/env bash
# A local Slurm cluster on this machine (two nodes by default), for tests and for trying the
# sbatch script.
#
#   launch/slurm/local_cluster.sh          # install if missing, configure, start, wait until idle
#   NODES=1 launch/slurm/local_cluster.sh  # the same with a single node
#   launch/slurm/local_cluster.sh stop     # stop every slurmd, slurmctld and munged
#   launch/slurm/local_cluster.sh status   # sinfo
#
# Needs root (apt-get, daemons). Works without systemd and without cgroups (containers, gVisor):
# daemons are started directly, process tracking is proctrack/linuxproc, no task plugin.
# NODES=N (default 2) runs N slurmd daemons on this machine (Slurm's multiple-slurmd mode, which
# Debian's build has: `slurmd -N <name>`), nodes <host>-1 .. <host>-N, each on 127.0.0.1 with its
# own port (6818, 6819, ...), spool dir, pid file and log. Their names are added to /etc/hosts
# (one line, marked gppf-local-cluster) so that jobs can reach any node by name. Every node
# declares this machine's real CPUs and memory (`slurmd -C`): the nodes overcommit the machine,
# which is the point of a test cluster. NODES=1 is one node named after `hostname -s`; a slurmd
# built without multiple-slurmd support also gets that, with a warning, when NODES is not set.
# Idempotent: running it again with the same NODES and the cluster up does nothing; with another
# NODES it rewrites slurm.conf and restarts the daemons.
# SlurmUser is root: this is a throwaway test cluster, not a template for a real one.
set -euo pipefail

STATE=${GPPF_SLURM_STATE:-/var/lib/gppf-slurm}
LOGS=${GPPF_SLURM_LOGS:-/var/log/gppf-slurm}
RUNDIR=/run/gppf-slurm
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
PARTITION=${GPPF_SLURM_PARTITION:-debug}
HOSTS_MARK="# gppf-local-cluster"
NODE_NAMES=()  # set by choose_nodes

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

# A daemon removes its pid file as it exits: read it once, quietly.
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

node_state() { sinfo -h -n "$1" -o %t 2>/dev/null | head -n1; }

multiple_slurmd() { slurmd -h 2>&1 | grep -c -- '-N node' >/dev/null; }

# NODE_NAMES from $NODES: one node is the host itself (one slurmd, no -N); several are
# <host>-1 .. <host>-N, one slurmd each.
choose_nodes() {
  local nodes=${NODES:-2}
  if [[ ! $nodes =~ ^[1-9][0-9]*$ ]]; then
    log "NODES=$nodes: must be a positive number"
    exit 2
  fi
  if ((nodes > 1)) && ! multiple_slurmd; then
    if [[ -n ${NODES:-} ]]; then
      log "NODES=$nodes needs a slurmd built with multiple-slurmd support (no \`slurmd -N\` here)"
      exit 1
    fi
    log "WARNING: this slurmd has no multiple-slurmd support (\`slurmd -N\`): one node only"
    nodes=1
  fi
  NODE_NAMES=()
  if ((nodes == 1)); then
    NODE_NAMES=("$HOST")
    return
  fi
  local i
  for ((i = 1; i <= nodes; i++)); do NODE_NAMES+=("$HOST-$i"); done
}

multi() { ((${#NODE_NAMES[@]} > 1)); }

slurmd_pidfile() {
  if multi; then echo "$RUNDIR/slurmd-$1.pid"; else echo "$RUNDIR/slurmd.pid"; fi
}

# Every node name resolves to 127.0.0.1, as the host's own name does: torchrun's rendezvous
# endpoint and MASTER_ADDR are node names from the job's node list. /etc/hosts is rewritten in
# place (in containers it is often a bind mount that cannot be replaced).
write_hosts() {
  multi || return 0
  local line="127.0.0.1 ${NODE_NAMES[*]} $HOSTS_MARK"
  grep -qxF -- "$line" /etc/hosts && return 0
  log "adding ${NODE_NAMES[*]} to /etc/hosts"
  local kept
  kept=$(grep -vF -- "$HOSTS_MARK" /etc/hosts || true)
  { [[ -n $kept ]] && echo "$kept"; echo "$line"; } >/etc/hosts
}

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
  local n=${#NODE_NAMES[@]} what spool pidfile logfile names name i
  mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d" "$LOGS" "$RUNDIR"
  if multi; then
    # Multiple slurmd on one host: %n is each daemon's node name.
    what="a $n-node test cluster on localhost (one slurmd per node, multiple-slurmd mode)"
    spool="$STATE/d/%n" pidfile="$RUNDIR/slurmd-%n.pid" logfile="$LOGS/slurmd-%n.log"
    for name in "${NODE_NAMES[@]}"; do mkdir -p "$STATE/d/$name"; done
  else
    what="a one-node test cluster on localhost"
    spool="$STATE/d" pidfile="$RUNDIR/slurmd.pid" logfile="$LOGS/slurmd.log"
  fi
  names=$(IFS=,; echo "${NODE_NAMES[*]}")
  local hwspec="CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores"
  hwspec+=" ThreadsPerCore=$threads RealMemory=$mem"
  local tmp
  tmp=$(mktemp)
  {
    cat <<EOF
# Written by gppf_dist launch/slurm/local_cluster.sh: $what.
ClusterName=gppf-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$spool
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$pidfile
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$logfile
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
EOF
    if multi; then
      for ((i = 0; i < n; i++)); do
        echo "NodeName=${NODE_NAMES[i]} NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((6818 + i))" \
          "$hwspec State=UNKNOWN"
      done
    else
      echo "NodeName=$HOST NodeAddr=127.0.0.1 $hwspec State=UNKNOWN"
    fi
    echo "PartitionName=$PARTITION Nodes=$names Default=YES MaxTime=INFINITE State=UP"
  } >"$tmp"
  if ! cmp -s "$tmp" "$CONF"; then
    log "writing $CONF (nodes $names: $cpus CPUs, $mem MB each)"
    mv "$tmp" "$CONF"
    chmod 0644 "$CONF"
    return 0
  fi
  rm -f "$tmp"
  return 1
}

wait_idle() {
  local name state=""
  for name in "${NODE_NAMES[@]}"; do
    for _ in $(seq 1 60); do
      state=$(node_state "$name")
      case $state in
        idle | mix | alloc) log "node $name is $state"; continue 2 ;;
        down* | drain* | inval*)
          scontrol update nodename="$name" state=resume 2>/dev/null || true ;;
      esac
      sleep 1
    done
    log "node $name did not become idle (state '${state:-none}'); see $LOGS/*.log"
    return 1
  done
}

start_slurmd() {
  local name
  for name in "${NODE_NAMES[@]}"; do
    running "$(slurmd_pidfile "$name")" && continue
    if multi; then
      log "starting slurmd for node $name"
      slurmd -N "$name"
    else
      log "starting slurmd"
      slurmd
    fi
  done
}

start() {
  need_root
  install_packages
  choose_nodes
  start_munge
  write_hosts
  if write_conf; then
    log "configuration written: (re)starting the daemons"
    stop_slurm
  fi
  if ! running "$RUNDIR/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld
  fi
  for _ in $(seq 1 30); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
  start_slurmd
  wait_idle
}

# Every slurmd (one-node and multiple-slurmd pid files alike), then slurmctld.
stop_slurm() {
  local pidfile pid
  for pidfile in "$RUNDIR"/slurmd.pid "$RUNDIR"/slurmd-*.pid "$RUNDIR/slurmctld.pid"; do
    [[ -e $pidfile ]] || continue
    if pid=$(cat "$pidfile" 2>/dev/null) && [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null; then
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
