"""Process-group set-up and rank information: the only `init_process_group` in the project.

Workers are started by the torch elastic agent (launcher=local), torchrun, the DeepSpeed launcher
or srun; all of them end up exporting RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (srun's
SLURM_* variables are mapped here, and the rendezvous address derived from the job's node list), so
`init_distributed` always uses the env:// rendezvous. The decisions (address, device index,
process-group arguments) are pure functions, unit-tested without a process group or a GPU.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.dist.hostlist import first_slurm_host

# srun exports these in every task; the step's list first: when a step runs on part of the
# allocation, its task 0 (the rendezvous host under env://) runs on the step's first node.
SLURM_NODELIST_KEYS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
# Ports for srun-launched ranks, one per job: below torch's default 29500 (and the torchrun
# rendezvous ports launch/slurm/gppf.sbatch uses from there) and below Linux's ephemeral range
# (32768+), where an outgoing connection could already hold the port.
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 9000


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


def slurm_port(job_id: int) -> int:
    """The rendezvous port of srun-launched ranks: every rank computes the same one from the job
    id, and jobs sharing a node get different ones (unless their ids are 9000 apart)."""
    return SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN


def rendezvous_address(env: Mapping[str, str], world_size: int) -> tuple[str, int]:
    """MASTER_ADDR and MASTER_PORT for env://: the launcher's when set; else, under srun without
    torchrun, the job's first node and `slurm_port`; a world of 1 uses this machine and a free
    port. Raises ValueError when several processes would otherwise each guess their own."""
    if "MASTER_ADDR" in env:
        addr = env["MASTER_ADDR"]
    elif world_size == 1:
        addr = "127.0.0.1"
    else:
        addr = _slurm_head_node(env, world_size)
    if "MASTER_PORT" in env:
        port = _port_number(env["MASTER_PORT"])
    elif world_size == 1:
        port = free_port()
    elif "SLURM_JOB_ID" in env:
        port = slurm_port(_int_value(env, "SLURM_JOB_ID"))
    else:
        raise ValueError(
            f"MASTER_PORT is not set and WORLD_SIZE={world_size}: the launcher must set it "
            "(torchrun and the DeepSpeed launcher do; under srun it comes from SLURM_JOB_ID)"
        )
    return addr, port


def _slurm_head_node(env: Mapping[str, str], world_size: int) -> str:
    for key in SLURM_NODELIST_KEYS:
        if key in env:
            try:
                return first_slurm_host(env[key])
            except ValueError as err:
                raise ValueError(f"{key}={env[key]!r}: {err}") from err
    # 127.0.0.1 here would have each node rendezvous with itself and hang until the timeout.
    raise ValueError(
        f"MASTER_ADDR is not set and WORLD_SIZE={world_size}: the launcher must set it to rank "
        f"0's host (or run under srun, which exports {' / '.join(SLURM_NODELIST_KEYS)})"
    )


def _port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"MASTER_PORT={text!r}: must be a port number, 1-65535")
    return int(text)


def _int_value(env: Mapping[str, str], key: str) -> int:
    if not env[key].isdigit():
        raise ValueError(f"{key}={env[key]!r}: must be a non-negative integer")
    return int(env[key])


def cuda_index(local_rank: int, device_count: int) -> int:
    """The CUDA device of the process with `local_rank` when `device_count` devices are visible."""
    if device_count == 1:
        # One GPU bound per task (srun --gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per rank):
        # it is cuda:0 whatever the task's LOCAL_RANK on the node is.
        return 0
    if 0 <= local_rank < device_count:
        return local_rank
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise ValueError(
        f"LOCAL_RANK={local_rank} but {device_count} CUDA device(s) are visible "
        f"(CUDA_VISIBLE_DEVICES={visible!r}): start at most one process per visible GPU on a node"
    )


def pick_device(preference: str, info: RankInfo) -> torch.device:
    """`preference` is trainer.device: auto, cpu or cuda."""
    if not (preference == "cuda" or (preference == "auto" and torch.cuda.is_available())):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ValueError(
            f"trainer.device={preference!r} but torch sees no CUDA device (CUDA_VISIBLE_DEVICES="
            f"{visible!r}, torch {torch.__version__}): use trainer.device=auto or cpu"
        )
    index = cuda_index(info.local_rank, count)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def configure_cuda_math(device: torch.device, *, tf32: bool, cudnn_benchmark: bool) -> None:
    """trainer.tf32 and trainer.cudnn_benchmark. These are process-wide switches, so a CPU run
    leaves them as they are (nothing it does reads them)."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark


def process_group_options(
    backend: str, device: torch.device, info: RankInfo, timeout_s: int
) -> dict[str, Any]:
    """Keyword arguments of `init_process_group` for this rank (backend auto: NCCL on CUDA)."""
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    options: dict[str, Any] = {
        "backend": backend,
        "init_method": "env://",
        "rank": info.rank,
        "world_size": info.world_size,
        "timeout": datetime.timedelta(seconds=timeout_s),
    }
    if backend == "nccl" and device.type == "cuda":
        assert device.index is not None, "pick_device returns an indexed CUDA device"
        # Binds the NCCL communicator to this rank's GPU (created eagerly) instead of letting
        # collectives such as barrier guess the device from the rank, which can hang. gloo needs
        # no binding (its barrier runs on the CPU), so it keeps torch's default.
        options["device_id"] = device
    return options


def init_distributed(backend: str, device: torch.device, timeout_s: int) -> RankInfo:
    """Join the default process group (a world of 1 works too, so every path is the same)."""
    info = rank_info_from_env()
    addr, port = rendezvous_address(os.environ, info.world_size)
    # env:// reads the address from the environment; export it so every later reader agrees.
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)
    if not dist.is_initialized():
        dist.init_process_group(**process_group_options(backend, device, info, timeout_s))
    return info


def leave_distributed(
    finished: bool, destroy: Callable[[], None] = dist.destroy_process_group
) -> None:
    """Leave the process groups. A rank that finished first waits for every peer (a barrier:
    no rank destroys its groups while a peer still evaluates, saves or logs; on NCCL an
    unordered teardown hangs), then `destroy`s every group, subgroups included (a library that
    keeps references to them passes its own destroy, which drops them). A rank leaving on an
    error skips the barrier: its peers may never get there."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    destroy()


def print0(*args: object, **kwargs: object) -> None:
    """Print from rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs, flush=True)  # type: ignore[call-overload]
