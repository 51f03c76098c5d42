"""What the multi-process benchmarks share: joining a local gloo group and timing a step."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist


def join_local_group(rank: int, world: int, port: int, threads: int = 1) -> None:
    """Join a gloo group of `world` processes on localhost (spawned by the benchmark)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def time_steps(fn: Callable[[], object], steps: int) -> list[float]:
    """Seconds per call of `fn`, all ranks starting together (barrier before and after)."""
    out = []
    for _ in range(steps):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dist.barrier()
        out.append(time.perf_counter() - t0)
    return out
