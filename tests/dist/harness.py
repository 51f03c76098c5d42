"""Run a function on N real gloo processes (spawned) and collect each rank's return value."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

from gppf_dist.dist.env import free_port, set_local_rank_env


def _entry(rank: int, fn: Callable[..., Any], world: int, port: int, out: str, args: tuple) -> None:
    set_local_rank_env(rank, world, port)
    os.environ.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    result = fn(*args)
    Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any) -> list[Any]:
    """fn must be a module-level function; it runs after RANK/WORLD_SIZE/MASTER_* are set."""
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(
            _entry,
            args=(fn, world_size, free_port(), out, args),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [pickle.loads(Path(out, f"rank{r}.pkl").read_bytes()) for r in range(world_size)]
