"""The one place a training step is put together: precision, expert parallelism, optimizers,
the DeepSpeed engine, the reduction strategy and the checkpoint's named state.

The worker, the benchmarks and the distributed tests all call `assemble_step`, so what they
measure and check is the product's wiring. The order matters and is written down here once:

1. precision and activation checkpointing are set on the model (before legos are sharded, so
   the local lego mixture inherits them);
2. with `parallel.ep_size` > 1 the legos are sharded (each rank keeps its own);
3. the optimizer takes the parameters DeepSpeed will hold (all but the lego shards when legos
   are stepped apart, i.e. expert parallelism under ZeRO 1/2);
4. DeepSpeed wraps the model (it broadcasts rank 0's parameters, so lego shards are restored);
5. channels-last weights after the engine (its broadcast needs dense tensors), ZeRO 0 only;
6. the legos' own optimizer, counted in DeepSpeed's clipping norm, when they are apart;
7. one reduction strategy (`reduction.py`) for the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.checkpoint.marker import Topology
from gppf_dist.checkpoint.store import Checkpointer, NamedState
from gppf_dist.config.schema import RunConfig
from gppf_dist.dist.mesh import ExpertGroups, build_checkpoint_group, build_expert_groups
from gppf_dist.engine.deepspeed import Engine, create_engine
from gppf_dist.engine.experts import keep_lego_shards, shard_legos
from gppf_dist.engine.lego_optim import LegoOptimizer
from gppf_dist.engine.optim import build_optimizer
from gppf_dist.engine.precision import apply_precision, compute_dtype, to_channels_last
from gppf_dist.engine.reduction import (
    Reduction,
    SimtExpertReduction,
    SimtReduction,
    ZeroReduction,
)
from gppf_dist.engine.step import StepContext, TaskRuntime
from gppf_dist.model.depth import depth_of, num_layers
from gppf_dist.model.lego import set_activation_checkpointing
from gppf_dist.model.owners import OwnerMap
from gppf_dist.parallel.expert import EPSession
from gppf_dist.parallel.plan import EPLayout
from gppf_dist.tasks.base import Batch

Optimizers = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]
OptimizerFactory = Callable[[nn.Module, Callable[[str], bool] | None], Optimizers]
"""(model, which parameter names to take, None: all) -> (optimizer, schedule)."""


@dataclass
class AssembledStep:
    """Everything the step was built from, for the worker's loop and checkpoints."""

    ctx: StepContext
    engine: Engine
    owners: OwnerMap
    layout: EPLayout
    groups: ExpertGroups
    session: EPSession | None
    named: NamedState | None
    """The topology-free checkpoint state (ZeRO 0, or the legos under ZeRO 1/2 + EP)."""
    legos: LegoOptimizer | None
    checkpoint_group: dist.ProcessGroup | None = None
    """Background checkpoint saves' own group (`trainer.checkpoint_async`)."""

    def checkpointer(self, cfg: RunConfig, is_main: bool) -> Checkpointer:
        topology = Topology(self.layout.world_size, self.layout.ep_size, cfg.parallel.zero_stage)
        return Checkpointer(
            engine=self.engine,
            run_dir=Path(cfg.run.dir),
            topology=topology,
            keep=cfg.trainer.keep_checkpoints,
            is_main=is_main,
            named=self.named,
            group=self.checkpoint_group,
        )


def default_optimizers(cfg: RunConfig, owners: OwnerMap) -> OptimizerFactory:
    """AdamW + warm-up cosine from `trainer`, each task's parameters at its `lr_mult`."""
    lr_mults = {name: t.lr_mult for name, t in cfg.simt.active_tasks().items()}
    decay, top = cfg.finetune.layer_decay, num_layers(cfg.model) + 1

    def layer_decay(name: str) -> float:  # fine-tuning: lr x decay^(L + 1 - depth)
        return decay ** (top - depth_of(name, cfg.model))

    scale = layer_decay if cfg.finetune.enabled and decay < 1 else None
    return lambda model, select: build_optimizer(
        model, cfg.trainer, owners, lr_mults, select, scale
    )


def assemble_step(
    cfg: RunConfig,
    model: nn.Module,
    tasks: dict[str, TaskRuntime],
    input_sizes: dict[str, tuple[int, int]],
    loaders: dict[str, Iterator[Batch]],
    *,
    rank: int,
    world_size: int,
    device: torch.device,
    placement: tuple[tuple[int, ...], ...] = (),
    optimizers: OptimizerFactory | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> AssembledStep:
    """Build the step of `model` (already on `device`) for `tasks`.

    `input_sizes`: each task's (H, W), for the lego exchange's shapes. `loaders`: task -> its
    batches on this rank (read at each step, so the caller may refill it). `placement`: the lego
    placement (() keeps the contiguous split). `optimizers`: how to build an optimizer over a
    subset of parameters (default: `default_optimizers`)."""
    trainer, parallel = cfg.trainer, cfg.parallel
    apply_precision(model, device, trainer.precision)
    set_activation_checkpointing(model, trainer.activation_checkpointing)
    owners: OwnerMap = model.param_owners()  # type: ignore[operator]
    make = optimizers or default_optimizers(cfg, owners)
    layout = EPLayout(world_size, parallel.ep_size, cfg.model.num_legos, placement)
    groups = build_expert_groups(layout, rank)
    # created here, on every rank in the same order, like the expert groups
    ckpt_group = build_checkpoint_group(parallel.timeout_s) if trainer.checkpoint_async else None
    session = None
    if layout.ep_size > 1:
        session = shard_legos(
            model, layout, groups, rank, input_sizes,
            wire_dtype=compute_dtype(trainer.precision) or torch.float32,
            check_splits=parallel.check_splits,
        )  # fmt: skip
    legos_apart = layout.ep_size > 1 and parallel.zero_stage > 0  # see lego_optim.py
    optimizer, scheduler = make(model, (lambda n: not owners.is_lego(n)) if legos_apart else None)
    with keep_lego_shards(model, owners):  # DeepSpeed broadcasts rank 0's parameters
        engine = create_engine(cfg, model, optimizer, scheduler, world_size, device)
    if trainer.channels_last and parallel.zero_stage == 0:  # see precision.py
        to_channels_last(model)
    writes_legos = rank < layout.ep_size
    legos = named = None
    if legos_apart:
        lego_opt, lego_sched = make(model, owners.is_lego)
        held = [(n, p) for n, p in model.named_parameters() if owners.is_lego(n)]
        legos = LegoOptimizer(held, lego_opt, lego_sched, world_size, groups.edp, groups.ep)
        engine.count_in_grad_norm(lambda: legos.sq_norm)
        named = NamedState(
            lego_opt, owners, writes_legos, legos_only=True, follow_schedule=legos.follow_schedule
        )
    elif parallel.zero_stage == 0:
        named = NamedState(optimizer, owners, writes_legos)
    ctx = StepContext(
        engine=engine,
        tasks=tasks,
        world_size=world_size,
        rank=rank,
        device=device,
        reduction=_reduction(cfg, owners, model, world_size, groups, legos),
        loaders=loaders,
        stop_requested=stop_requested,
        ep=session,
        ep_ranks=tuple(groups.ep_ranks),
        precision=trainer.precision,
        channels_last=trainer.channels_last,
    )
    return AssembledStep(ctx, engine, owners, layout, groups, session, named, legos, ckpt_group)


def _reduction(
    cfg: RunConfig,
    owners: OwnerMap,
    model: nn.Module,
    world: int,
    groups: ExpertGroups,
    legos: LegoOptimizer | None,
) -> Reduction:
    clip = cfg.trainer.grad_clip
    if cfg.parallel.zero_stage > 0:
        return ZeroReduction(clip, legos)
    active = model.active_legos  # type: ignore[union-attr]
    if cfg.parallel.ep_size > 1:
        return SimtExpertReduction(owners, active, world, clip, groups.edp, groups.ep)
    return SimtReduction(owners, active, world, clip)
