"""What the multi-process benchmarks share: joining a local gloo group and timing a step."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from gppf_dist.dist.env import set_local_rank_env


def join_local_group(
    rank: int, world: int, port: int, threads: int = 1, device: str = "cpu"
) -> torch.device:
    """Join a group of `world` processes on localhost (spawned by the benchmark): gloo on CPU,
    nccl with one GPU per rank on CUDA. Returns this rank's device."""
    set_local_rank_env(rank, world, port)
    torch.set_num_threads(threads)
    if device == "cuda":
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", rank=rank, world_size=world)
        return torch.device("cuda", rank)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return torch.device("cpu")


def time_steps(fn: Callable[[], object], steps: int) -> list[float]:
    """Seconds per call of `fn`, all ranks starting together (barrier before and after)."""
    out = []
    for _ in range(steps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        out.append(time.perf_counter() - t0)
    return out


def _sync() -> None:
    """Wait for this rank's device work, then for every rank."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    dist.barrier()
