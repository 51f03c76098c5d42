"""Run a function on N processes of this machine and collect what each rank returns.

For benchmarks and tests that start their own local process group (a training run's workers are
started by a launcher instead): `spawn_ranks` picks one free localhost port for the rendezvous,
spawns the processes (start method "spawn": fresh interpreters, no forked gloo or CUDA state),
waits for all of them and returns their results in rank order. A rank that raises ends the others
and re-raises here (torch.multiprocessing's `ProcessRaisedException`, with the rank's traceback).
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

from gppf_dist.dist.env import free_port


def _entry(
    rank: int, fn: Callable[..., Any], world_size: int, port: int, out: str, args: tuple
) -> None:
    """One spawned rank: run `fn` and leave its pickled result in `out`."""
    result = fn(rank, world_size, port, *args)
    Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))


def spawn_ranks(fn: Callable[..., Any], world_size: int, *args: Any) -> list[Any]:
    """`fn(rank, world_size, port, *args)` for every rank, each in its own spawned process.

    `port` is the same free localhost port for all ranks (e.g. for `set_local_rank_env`). `fn`
    must be a module-level function (it is pickled to the children) with a picklable result.
    Returns the results, rank 0 first, once every process has exited.
    """
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(
            _entry,
            args=(fn, world_size, free_port(), out, args),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [pickle.loads(Path(out, f"rank{r}.pkl").read_bytes()) for r in range(world_size)]
