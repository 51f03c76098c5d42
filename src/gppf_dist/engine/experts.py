"""Wiring expert parallelism into a worker: shard the legos, keep them through engine start-up,
and under ZeRO 1/2 give them their own optimizer.

Also reports how many lego calls were served by the requesting rank itself (locality).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from gppf_dist.config.schema import TrainerSection
from gppf_dist.dist.mesh import ExpertGroups
from gppf_dist.engine.deepspeed import count_in_grad_norm
from gppf_dist.engine.lego_optim import LegoOptimizer
from gppf_dist.engine.optim import build_optimizer
from gppf_dist.engine.runtime import TaskSet
from gppf_dist.parallel.expert import EPSession, apply_expert_parallel, record_lego_shapes
from gppf_dist.parallel.plan import EPLayout


def shard_legos(
    model: nn.Module, layout: EPLayout, groups: ExpertGroups, rank: int, taskset: TaskSet
) -> EPSession:
    """Record each task's lego activation shapes, then keep only this rank's legos."""
    sizes = {n: (t.input_size[0], t.input_size[1]) for n, t in taskset.active.items()}
    shapes = record_lego_shapes(model, sizes)
    assert groups.ep is not None
    session = EPSession(
        layout=layout,
        group=groups.ep,
        ep_rank=layout.ep_rank(rank),
        route_of=model.router.route,  # type: ignore[union-attr, arg-type]
        shapes=shapes,
        num_layers=0,
    )
    apply_expert_parallel(model, session)
    return session


@contextlib.contextmanager
def keep_lego_shards(model: nn.Module, owners: dict[str, str]) -> Iterator[None]:
    """DeepSpeed broadcasts every parameter from rank 0 when it wraps the model; lego shards
    differ per rank under expert parallelism, so they are restored afterwards."""
    saved = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if owners.get(n, "").startswith("lego:")
    }
    yield
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(saved[n])


def locality_affinity(
    model: nn.Module, layout: EPLayout, tasks: dict[str, float], weight: float
) -> dict[str, list[float]] | None:
    """Per task and rank, the predicted extra cost per sample of remote lego calls.

    Only once routes are frozen (before that they move, and placement would chase them).
    `tasks` maps task -> its cost per sample.
    """
    router = model.router  # type: ignore[union-attr]
    if layout.ep_size == 1 or weight <= 0 or not bool(router.is_frozen):
        return None
    out = {}
    for task, cost in tasks.items():
        selected = [int(i) for layer in router.route(task).indices for i in layer]
        row = []
        for rank in range(layout.world_size):
            remote = sum(layout.owner(i) != layout.ep_rank(rank) for i in selected)
            row.append(weight * cost * remote / len(selected))
        out[task] = row
    return out


def not_lego(owners: dict[str, str]) -> Callable[[str], bool]:
    return lambda name: not owners.get(name, "").startswith("lego:")


def build_lego_optimizer(
    model: nn.Module,
    trainer: TrainerSection,
    owners: dict[str, str],
    layout: EPLayout,
    groups: ExpertGroups,
    engine: Any,
) -> LegoOptimizer:
    """ZeRO 1/2 with expert parallelism: the legos' own optimizer, with its squared gradient
    norm counted in DeepSpeed's clipping norm (see lego_optim.py)."""
    optimizer, scheduler = build_optimizer(
        model, trainer, owners, select=lambda name: not not_lego(owners)(name)
    )
    named = [(n, p) for n, p in model.named_parameters() if owners[n].startswith("lego:")]
    legos = LegoOptimizer(named, optimizer, scheduler, layout.world_size, groups.edp, groups.ep)
    count_in_grad_norm(engine, lambda: legos.sq_norm)
    return legos
