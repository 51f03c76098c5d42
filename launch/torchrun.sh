#!/usr/bin/env bash
# Pre-train GPPF with torchrun; arguments are Hydra overrides.
#
#   launch/torchrun.sh experiment=demo                        # this node, NPROC_PER_NODE procs
#   NNODES=4 NODE_RANK=0 RDZV_ENDPOINT=node001:29500 NPROC_PER_NODE=8 \
#       launch/torchrun.sh experiment=demo run.dir=runs/big   # run the same on every node
#
# Single node (NNODES unset or 1): `--standalone`. Several nodes: c10d rendezvous at
# $RDZV_ENDPOINT (host:port of any one node, usually the first), job id $RDZV_ID; or with
# RDZV_BACKEND=static, NODE_RANK on every node and $RDZV_ENDPOINT as the master's host:port.
# Nodes whose hostnames do not resolve to the interface between them: set LOCAL_ADDR (this
# node's address there) and GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME (that interface). Processes per
# node: $NPROC_PER_NODE, else one per visible GPU, else 2 (CPU). torchrun only sets environment
# variables, so Hydra sees nothing but the overrides; each rank runs `launcher=none`.
# MAX_RESTARTS=N restarts all workers up to N times after a failure; they resume from the newest
# complete checkpoint.
# Keep run.dir deterministic (the default runs/<run.name> is) so a restarted job resumes.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${GPPF_PYTHON:-$repo/.venv/bin/python}
[[ -x $py ]] || py=python3

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
if ((gpus == 0)); then
  export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
fi
nproc=${NPROC_PER_NODE:-$((gpus > 0 ? gpus : 2))}
nnodes=${NNODES:-1}
export HYDRA_FULL_ERROR=${HYDRA_FULL_ERROR:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

max_restarts=${MAX_RESTARTS:-0}
if ((max_restarts > 0)); then
  # A fresh store per restart: the agent's shared one still holds the dead attempt's gloo
  # addresses, and the restarted group can read them (pytorch/pytorch#135712, #167288).
  export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
fi
args=(--nproc-per-node "$nproc" --max-restarts "$max_restarts")
args+=("--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
if [[ $nnodes == 1 ]]; then
  args+=(--standalone)
else
  if [[ -z ${RDZV_ENDPOINT:-} ]]; then
    echo "torchrun.sh: NNODES=$nnodes needs RDZV_ENDPOINT=<host:port> (same on every node)" >&2
    exit 2
  fi
  if [[ ${RDZV_BACKEND:-c10d} == static ]]; then
    # Static: every node names its rank; the first node's host:port is the master.
    if [[ -z ${NODE_RANK:-} ]]; then
      echo "torchrun.sh: RDZV_BACKEND=static needs NODE_RANK (0..NNODES-1) on every node" >&2
      exit 2
    fi
    args+=(--nnodes "$nnodes" --node-rank "$NODE_RANK" --rdzv-backend static)
    args+=(--master-addr "${RDZV_ENDPOINT%:*}" --master-port "${RDZV_ENDPOINT##*:}")
  else
    args+=(--nnodes "$nnodes" --rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT")
    args+=(--rdzv-id "${RDZV_ID:-gppf}")
    if [[ -n ${NODE_RANK:-} ]]; then
      args+=(--node-rank "$NODE_RANK")
      # The rendezvous store lives on node 0, and only there: without this torchrun decides by
      # matching the endpoint against this host's names, which misses when the name resolves
      # elsewhere, and races when several nodes share an address.
      if [[ $NODE_RANK == 0 ]]; then
        args+=(--rdzv-conf is_host=1)
      else
        args+=(--rdzv-conf is_host=0)
      fi
    fi
  fi
  # LOCAL_ADDR: the address other nodes reach this one at (else torchrun uses the hostname,
  # which may resolve to a loopback or an unreachable interface).
  [[ -n ${LOCAL_ADDR:-} ]] && args+=(--local-addr "$LOCAL_ADDR")
fi

echo "torchrun.sh: $nnodes node(s) x $nproc process(es)" >&2
exec "$py" -m torch.distributed.run "${args[@]}" -m gppf_dist.cli.train launcher=none "$@"
