#!/usr/bin/env bash
# `make gpu-check PYTHON=/path/to/python3`: the GPU checks on a machine with no network and no
# .venv. That interpreter's own torch is used and left as it is; everything else is installed
# from the wheelhouse (`make wheelhouse-gpu-check`, or `make wheelhouse`) into a temporary folder
# that is put on PYTHONPATH and removed afterwards. pip reads no configuration file and no index.
set -euo pipefail
python=${1:?usage: gpu_check_offline.sh PYTHON [WHEELHOUSE] [OUT]}
wheelhouse=${2:-wheelhouse}
out=${3:-runs/gpu-check.json}

if ! "$python" -c 'import torch' 2>/dev/null; then
  echo "gpu-check: $python cannot import torch; install the cluster's torch build into it first" >&2
  exit 2
fi
requirements=$wheelhouse/gpu-check/requirements.txt
[[ -f $requirements ]] || requirements=$wheelhouse/requirements.txt
if [[ ! -f $requirements ]]; then
  echo "gpu-check: no $wheelhouse/gpu-check/requirements.txt nor $wheelhouse/requirements.txt;" \
    "write them where there is a network: make wheelhouse-gpu-check (or make wheelhouse)" >&2
  exit 2
fi
site=$(mktemp -d -t gppf-gpu-check-site-XXXXXX)
trap 'rm -rf "$site"' EXIT
# --no-deps: the requirements file is the whole closure except torch, pinned; resolving it
# would ask for torch, which is the environment's and must stay untouched.
PIP_CONFIG_FILE=/dev/null "$python" -m pip install --isolated --quiet --disable-pip-version-check \
  --no-index --no-deps --find-links "$wheelhouse" --find-links "$wheelhouse/gpu-check" \
  --target "$site" -r "$requirements"
mkdir -p "$(dirname "$out")"
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$python" -m gppf_dist.cli.bench gpu-check --out "$out"
