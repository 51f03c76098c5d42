"""The only module that imports DeepSpeed: config generation, engine creation, checkpoint I/O.

`Engine` is the typed face of DeepSpeed's engine that the rest of the project sees: the step
(`step.py`, `reduction.py`), the checkpoint (`checkpoint/store.py`'s `EngineState`) and the tools.

The DeepSpeed JSON is generated from the typed config, never hand-written. SIMT feeds the engine
its own batches (DeepSpeed's data loader is unused), so the batch-size fields are nominal: one
micro-batch per rank per iteration and no DeepSpeed-managed accumulation; a rank that runs several
tasks accumulates them with `Engine.accumulate()` and reduces once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.checkpoint.saving import write_torch
from gppf_dist.checkpoint.zero_state import (
    MASTER,
    STATE_KEYS,
    Partition,
    Piece,
    fresh_adam_state,
)
from gppf_dist.config.schema import RunConfig

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402  (DS_ACCELERATOR must be set first)


class DeepSpeedPatch(NamedTuple):
    """One place where this module replaces something inside DeepSpeed."""

    target: str
    """Dotted path of what is replaced (a method swapped on an object: the class's method)."""
    signature: str | None
    """`str(inspect.signature(target))` in the DeepSpeed the patch was written against (None:
    a plain attribute that DeepSpeed reads, not a function)."""
    site: str
    """Where the patch is applied, in this module."""
    why: str
    """What breaks without it."""


DEEPSPEED_PATCHES: tuple[DeepSpeedPatch, ...] = (
    DeepSpeedPatch(
        "deepspeed.comm.torch.build_shm_op",
        "()",
        "_without_shared_memory_all_reduce",
        "starting a process group on the CPU would JIT-compile DeepSpeed's shared-memory "
        "all-reduce (~70 CPU-s where not yet built), which training never uses",
    ),
    DeepSpeedPatch(
        "deepspeed.runtime.zero.stage_1_and_2.DeepSpeedZeroOptimizer.scaled_global_norm",
        "(self, norm_type=2)",
        "Engine.count_in_grad_norm",
        "ZeRO 1/2 would clip by, and report, a norm without the expert-parallel lego shards "
        "held beside its optimizer",
    ),
    DeepSpeedPatch(
        "deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine.TorchCheckpointEngine.save",
        "(self, state_dict, path: str)",
        "Engine.save_state",
        "a failed write would raise mid-save on one rank (its peers wait in the collective), "
        "a full disk would not say ENOSPC, and the files would go unhashed and unqueued for "
        "background saves (checkpoint/saving.py)",
    ),
    DeepSpeedPatch(
        "deepspeed.runtime.engine.DeepSpeedEngine.save_zero_checkpoint",
        None,
        "create_engine",
        "under ZeRO 1/2 DeepSpeed would also write its per-rank optimizer files, which load only "
        "at the world size that wrote them (ours, `Engine.zero_partitions`, load at any)",
    ),
)
"""Every DeepSpeed patch of this module, checked against the installed DeepSpeed by
tests/unit/test_deepspeed_patches.py; a patch added here needs its row."""


def _without_shared_memory_all_reduce() -> None:
    """DeepSpeed's communication layer, when it starts on its CPU accelerator, JIT-compiles a
    C++ shared-memory all-reduce (~70 CPU-s on a machine that has not built it yet; the first
    demo run waited for it) and maps shared-memory segments between a node's ranks. Only its
    inference all-reduce uses them, which training never calls; without the op DeepSpeed uses
    torch.distributed, as it does on CUDA, where the op does not exist."""
    import importlib

    ds_torch = importlib.import_module("deepspeed.comm.torch")  # not `deepspeed.comm`'s torch
    # Patch (DEEPSPEED_PATCHES): without it, a CPU process group JIT-builds an unused C++ op.
    ds_torch.build_shm_op = lambda: None


_without_shared_memory_all_reduce()


def deepspeed_config(cfg: RunConfig, world_size: int, device: torch.device) -> dict[str, Any]:
    """DeepSpeed's JSON from our typed config."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        # ZeRO 0: SIMT reduces and clips itself (simt/reduce.py); DeepSpeed only steps.
        "gradient_clipping": cfg.trainer.grad_clip if cfg.parallel.zero_stage > 0 else 0.0,
        "zero_optimization": {"stage": cfg.parallel.zero_stage},
        # We pass a plain torch optimizer (AdamW/SGD); ZeRO 1/2 shard its state correctly.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "dump_state": False,
    }
    if device.type == "cuda":
        config["bf16"] = {"enabled": False}
    return config


def create_engine(
    cfg: RunConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    world_size: int,
    device: torch.device,
) -> Engine:
    """Wrap the model with `deepspeed.initialize` (the process group must already exist)."""
    check_accelerator(device)
    engine, _, _, _ = deepspeed.initialize(
        args=engine_args(device),
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg, world_size, device),
        dist_init_required=False,
    )
    if cfg.parallel.zero_stage > 0:
        # Patch (DEEPSPEED_PATCHES): without it, ZeRO writes optimizer files tied to the world size.
        # Ours (`Engine.zero_partitions`, `checkpoint/zero_state.py`) hold that state by name.
        engine.save_zero_checkpoint = False
    return Engine(engine)


def destroy_groups() -> None:
    """Destroy every process group through DeepSpeed's communication layer, which also drops
    the references its modules keep (expert, data-parallel and world groups): none is left for
    the interpreter's finalization to tear down out of order."""
    import deepspeed.comm as ds_comm

    if ds_comm.is_initialized():
        ds_comm.destroy_process_group()
    if dist.is_initialized():
        dist.destroy_process_group()


def engine_args(device: torch.device) -> SimpleNamespace | None:
    """`deepspeed.initialize`'s `args`: on CUDA, the device this rank picked (`dist/env.py`).

    Without it DeepSpeed binds `cuda:LOCAL_RANK` and moves the module there. Under
    `srun --gpus-per-task=1` every task sees one GPU, `cuda:0`, so local ranks 1-7 would ask for
    a device that does not exist. On the CPU DeepSpeed keeps its default.
    """
    if device.type != "cuda":
        return None
    return SimpleNamespace(device_rank=device.index)


def check_accelerator(device: torch.device) -> None:
    """DeepSpeed's accelerator must be the device's kind: `DS_ACCELERATOR=cpu` left in the
    environment of a GPU node would have DeepSpeed move the model to the host while NCCL gets
    the rest."""
    accelerator = deepspeed.get_accelerator().device_name()
    if accelerator != device.type:
        raise ValueError(
            f"trainer.device resolved to {device} but DeepSpeed's accelerator is "
            f"{accelerator!r} (DS_ACCELERATOR={os.environ.get('DS_ACCELERATOR')!r}): unset "
            f"DS_ACCELERATOR on a GPU node, or set trainer.device=cpu"
        )


class Engine:
    """DeepSpeed's engine as the step and the checkpoint use it."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    @property
    def module(self) -> nn.Module:
        return self.ds.module

    @property
    def lr_scheduler(self) -> Any:
        return self.ds.lr_scheduler

    @property
    def optimizer(self) -> Any:
        """The optimizer DeepSpeed steps (ZeRO 1/2: its partitioning wrapper)."""
        return self.ds.optimizer

    @property
    def zero_stage(self) -> int:
        return int(self.ds.zero_optimization_stage())

    def zero_partitions(self) -> list[Partition]:
        """Under ZeRO 1/2: this rank's partition of every parameter group (master weights,
        AdamW moments, step) with the pieces of named parameters it holds; the moments are
        created (zero, at step 0) when no step has run yet, as a resume needs them."""
        zero = self.ds.optimizer
        inner = zero.optimizer
        names = {id(p): n for n, p in self.module.named_parameters()}
        parts = []
        for i, flat in enumerate(zero.single_partition_of_fp32_groups):
            state = inner.state[flat]
            if not state:
                group = inner.param_groups[i]
                state.update(
                    fresh_adam_state(flat, bool(group.get("fused") or group.get("capturable")))
                )
            pieces = []
            for lp in zero.bit16_groups[i]:
                mapping = getattr(lp, "_hp_mapping", None)
                if mapping is None:
                    continue
                lp_at, hp_at = mapping.lp_fragment_address, mapping.hp_fragment_address
                pieces.append(Piece(names[id(lp)], int(lp_at.start), int(lp_at.numel),
                                    int(hp_at.start)))  # fmt: skip
            tensors = {MASTER: flat, **{k: state[k] for k in STATE_KEYS}}
            parts.append(Partition(tensors, state["step"], pieces))
        return parts

    def refresh_from_master(self) -> None:
        """Under ZeRO 1/2, after the master weights changed: every rank's parameters take
        them (each copies its partition, then they are all-gathered)."""
        self.ds.optimizer.update_lp_params()

    def lr(self) -> float:
        """The first parameter group's current learning rate."""
        return float(self.ds.get_lr()[0])

    def forward(self, task: str, images: torch.Tensor) -> Any:
        return self.ds(task, images)

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)

    def step(self) -> None:
        self.ds.step()

    def no_sync(self) -> contextlib.AbstractContextManager:
        """ZeRO 0: a backward that leaves gradient reduction to the caller."""
        return self.ds.no_sync()

    def accumulate(self, num_backwards: int) -> contextlib.AbstractContextManager:
        """Contexts for `num_backwards` backward calls that reduce gradients exactly once.

        ZeRO 0 reduces in the last backward (the earlier ones run under `no_sync`); ZeRO 1/2
        coalesce all of them into one reduction when the block exits. Every rank reduces once
        per iteration, whatever number of tasks it ran, so collectives stay symmetric.
        """
        return _accumulate(self.ds, num_backwards)

    def global_grad_norm(self) -> float:
        """The gradient norm DeepSpeed clipped by in its last step (ZeRO 1/2)."""
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def step_applied(self) -> bool:
        """False when DeepSpeed skipped its last step (ZeRO treats a non-finite norm as
        overflow)."""
        return bool(self.ds.was_step_applied())

    def count_in_grad_norm(self, extra_sq_norm: Callable[[], torch.Tensor]) -> None:
        """ZeRO 1/2 clip by the norm of the parameters their optimizer holds. Parameters held
        beside it (expert-parallel lego shards, `lego_optim.py`) add `extra_sq_norm()`, their
        squared norm over the world, so one global norm clips everything and is the one
        DeepSpeed reports.

        DeepSpeed's ZeRO step computes that norm once, in `scaled_global_norm` (the norm times
        the loss scale, which is 1 without fp16), then clips with it; this wraps that method.
        """
        optimizer = self.ds.optimizer
        inner = getattr(optimizer, "scaled_global_norm", None)
        if inner is None or getattr(optimizer, "loss_scale", 1.0) != 1.0:
            raise RuntimeError(
                f"{type(optimizer).__name__}: expected DeepSpeed's ZeRO 1/2 optimizer with no "
                "loss scaling; expert-parallel legos under ZeRO need its global-norm hook"
            )

        def scaled_global_norm(norm_type: int = 2) -> torch.Tensor:
            norm = inner(norm_type)
            extra = extra_sq_norm().to(device=norm.device, dtype=torch.float64)
            return (norm.double().square() + extra).sqrt().to(norm.dtype)

        # Patch (DEEPSPEED_PATCHES): without it, ZeRO clips by a norm that leaves the legos out.
        optimizer.scaled_global_norm = scaled_global_norm

    def save_state(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Collective: every rank must call it (DeepSpeed writes per-rank optimizer shards).

        A failed write is raised only after DeepSpeed's collective part has run to its end on
        this rank, so no other rank is left waiting in it: DeepSpeed's file writes are caught
        at its checkpoint engine (and made through a file object, so a full disk says ENOSPC).
        An OSError DeepSpeed raises itself (rank 0 copying its recovery scripts) comes before
        its closing barrier, which this rank then still joins."""
        writer = self.ds.checkpoint_engine
        zipfile = getattr(writer, "zipfile_serialization", True)
        failed: list[BaseException] = []

        def save(state_dict: dict[str, Any], path: str) -> None:
            if failed:
                return  # one failure dooms the checkpoint; skip the remaining files
            try:
                write_torch(state_dict, Path(path), _use_new_zipfile_serialization=zipfile)
            except Exception as err:  # a rank raising mid-save: reported once all ranks agree
                failed.append(err)

        # Patch (DEEPSPEED_PATCHES): without it, a failed write raises mid-save and peers hang.
        writer.save = save
        try:
            self.ds.save_checkpoint(
                str(directory), tag=tag, client_state=client_state, save_latest=False
            )
        except OSError:
            dist.barrier()
            raise
        finally:
            del writer.save  # DeepSpeed's own method again
        if failed:
            raise failed[0]

    def load_state(
        self, directory: Path, tag: str, *, module_strict: bool, optimizer: bool
    ) -> dict[str, Any]:
        path, client_state = self.ds.load_checkpoint(
            str(directory),
            tag=tag,
            load_module_strict=module_strict,
            load_optimizer_states=optimizer,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise ValueError(f"checkpoint {tag!r} in {str(directory)!r} could not be loaded")
        return dict(client_state or {})


@contextlib.contextmanager
def _accumulate(ds: Any, num_backwards: int) -> Iterator[list[contextlib.AbstractContextManager]]:
    if ds.zero_optimization_stage() == 0:
        yield [
            ds.no_sync() if i < num_backwards - 1 else contextlib.nullcontext()
            for i in range(num_backwards)
        ]
    else:
        with ds.coalesce_grad_reduction():
            yield [contextlib.nullcontext() for _ in range(num_backwards)]


def build_moe_layer(hidden: int, expert: nn.Module, num_experts: int, ep_size: int, k: int) -> Any:
    """DeepSpeed's token-routed MoE layer (the peer in `gppf-bench ep`); process group must exist.

    No token dropping and a capacity large enough for any routing, so both sides do the same
    amount of expert work.
    """
    from deepspeed.moe.layer import MoE

    deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")
    return MoE(
        hidden_size=hidden,
        expert=expert,
        num_experts=num_experts,
        ep_size=ep_size,
        k=k,
        capacity_factor=float(num_experts),
        eval_capacity_factor=float(num_experts),
        drop_tokens=False,
    )
