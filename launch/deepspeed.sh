#!/usr/bin/env bash
# Pre-train GPPF with the DeepSpeed launcher and a hostfile; arguments are Hydra overrides.
#
#   launch/deepspeed.sh experiment=demo                                # launch/hostfile.example
#   HOSTFILE=/job/hostfile launch/deepspeed.sh experiment=demo run.dir=runs/big
#   NO_SSH=1 NODE_RANK=$SLURM_NODEID HOSTFILE=hosts launch/deepspeed.sh ...  # one call per node
#
# Each rank runs `python -m gppf_dist.cli.train launcher=none <overrides>`; `--no_local_rank`
# keeps DeepSpeed from appending `--local_rank=N`, which Hydra would reject. The multi-node PDSH
# path forwards only a few variables (NCCL_*, PYTHON*, ...), so WANDB_*, HYDRA_*, WDS_*, GPPF_*,
# DS_ACCELERATOR and OMP_NUM_THREADS are written to a .deepspeed_env file (DS_ENV_FILE) that the
# launcher exports on every node. A hostfile with a single host runs locally without ssh.
# Keep run.dir deterministic (the default runs/<run.name> is) so a restarted job resumes.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hostfile=${HOSTFILE:-$repo/launch/hostfile.example}
py=${GPPF_PYTHON:-$repo/.venv/bin/python}
[[ -x $py ]] || py=python3
master_port=${MASTER_PORT:-29500}

mapfile -t hosts < <(sed -e 's/#.*//' "$hostfile" | awk 'NF {print $1}')
if ((${#hosts[@]} == 0)); then
  echo "deepspeed.sh: no hosts in $hostfile" >&2
  exit 2
fi
master_addr=${MASTER_ADDR:-${hosts[0]}}
[[ $master_addr == localhost ]] && master_addr=127.0.0.1

export HYDRA_FULL_ERROR=${HYDRA_FULL_ERROR:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if ! command -v nvidia-smi >/dev/null 2>&1; then
  export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
fi

# Variables the PDSH launcher would drop: hand them over through a DeepSpeed env file, merged
# with the user's own ./.deepspeed_env, which DS_ENV_FILE would otherwise hide.
# GPPF_DS_ENV_FILE keeps the file (to inspect it); by default it is a temporary one.
env_file=${GPPF_DS_ENV_FILE:-}
if [[ -z $env_file ]]; then
  env_file=$(mktemp "${TMPDIR:-/tmp}/gppf-deepspeed-env.XXXXXX")
  trap 'rm -f "$env_file"' EXIT
fi
{
  [[ -f .deepspeed_env ]] && cat .deepspeed_env
  env | grep -E '^(WANDB_|HYDRA_|WDS_|GPPF_|DS_ACCELERATOR=|OMP_NUM_THREADS=|PYTHONPATH=)' || true
} >"$env_file"
export DS_ENV_FILE=$env_file

args=(--hostfile "$hostfile" --master_addr "$master_addr" --master_port "$master_port")
if ((${#hosts[@]} == 1)) || [[ -n ${NO_SSH:-} ]]; then
  args+=(--no_ssh --node_rank "${NODE_RANK:-0}")  # this node only: no ssh, no pdsh
fi
args+=(--no_local_rank --module gppf_dist.cli.train launcher=none)

echo "deepspeed.sh: ${#hosts[@]} host(s) from $hostfile, master $master_addr:$master_port" >&2
"$py" -m deepspeed.launcher.runner "${args[@]}" "$@"
