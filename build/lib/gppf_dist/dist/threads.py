"""How many intra-op CPU threads a worker uses: its share of the cores it can run on.

torch starts one intra-op thread per core in every process. Several workers on one machine then
ask for N x cores threads and, with busy-waiting OpenMP pools, spend their time preempting each
other (on a 2-core machine two such workers ran steps up to 100x slower). A worker therefore
sizes its pool from the cores it may use (its CPU affinity, which follows cgroups, taskset and
Slurm's binding) divided by the workers that share them, unless told otherwise:

1. `trainer.cpu_threads` > 0: exactly that many;
2. `OMP_NUM_THREADS` set in the environment (the user, `make`, or a launch script): left alone;
3. `SLURM_CPUS_PER_TASK` under Slurm: Slurm's per-task budget;
4. else affinity cores // local workers (at least 1).

Applied at the start of every worker process, so it holds for every launcher and after every
elastic restart; the value is exported as OMP_NUM_THREADS for the worker's own children (decode
processes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

LOCAL_WORLD_VARS = ("LOCAL_WORLD_SIZE", "LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
"""Where launchers say how many workers run on this machine: torch elastic / torchrun, the
DeepSpeed launcher, Slurm (e.g. "4" or "4(x2)")."""


def affinity_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_workers(env: Mapping[str, str]) -> int:
    for name in LOCAL_WORLD_VARS:
        match = re.match(r"\s*(\d+)", env.get(name, ""))
        if match and int(match.group(1)) > 0:
            return int(match.group(1))
    return 1


def choose_threads(setting: int, env: Mapping[str, str], cores: int) -> tuple[int | None, str]:
    """(threads, why); threads None means: leave torch's setting (OMP_NUM_THREADS) alone."""
    if setting > 0:
        return setting, f"trainer.cpu_threads={setting}"
    if env.get("OMP_NUM_THREADS", "").strip():
        return None, f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} from the environment"
    slurm = env.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm), f"SLURM_CPUS_PER_TASK={slurm}"
    workers = local_workers(env)
    return max(1, cores // workers), f"{cores} cores / {workers} local workers"


def configure_threads(setting: int) -> str:
    """Size this process's intra-op pool (see the module docstring); returns a one-line reason."""
    threads, why = choose_threads(setting, os.environ, affinity_cores())
    if threads is not None:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return f"{torch.get_num_threads()} intra-op CPU threads ({why})"
