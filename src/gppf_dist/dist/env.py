"""Process-group set-up and rank information: the only `init_process_group` in the project.

Workers are started by the torch elastic agent (launcher=local), torchrun, the DeepSpeed launcher
or srun; all of them end up exporting RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (srun's
SLURM_* variables are mapped here), so `init_distributed` always uses the env:// rendezvous.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_info_from_env() -> RankInfo:
    """Read the launcher's environment; a bare process is rank 0 of 1."""
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        # srun without torchrun: one task per rank.
        env["RANK"] = env["SLURM_PROCID"]
        env["WORLD_SIZE"] = env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    return RankInfo(
        rank=int(env.get("RANK", "0")),
        world_size=int(env.get("WORLD_SIZE", "1")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
    )


def set_local_rank_env(rank: int, world_size: int, port: int) -> None:
    """The variables a launcher sets, for one of `world_size` processes on this machine (tests and
    benchmarks that spawn their own processes)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_device(preference: str, info: RankInfo) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def init_distributed(backend: str, device: torch.device, timeout_s: int) -> RankInfo:
    """Join the default process group (a world of 1 works too, so every path is the same)."""
    info = rank_info_from_env()
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        assert info.world_size == 1, "MASTER_PORT must be set by the launcher when WORLD_SIZE > 1"
        os.environ["MASTER_PORT"] = str(free_port())
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=info.rank,
            world_size=info.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return info


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def print0(*args: object, **kwargs: object) -> None:
    """Print from rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs, flush=True)  # type: ignore[call-overload]
