"""Run a function on N real gloo processes (spawned) and collect each rank's return value."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from gppf_dist.dist.env import set_local_rank_env
from gppf_dist.dist.spawn import spawn_ranks


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> Any:
    """One rank: the launcher variables and single-threaded CPU settings, then `fn(*args)`."""
    set_local_rank_env(rank, world, port)
    os.environ.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    return fn(*args)


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any) -> list[Any]:
    """fn must be a module-level function; it runs after RANK/WORLD_SIZE/MASTER_* are set."""
    return spawn_ranks(_entry, world_size, fn, args)
