"""Wiring expert parallelism into a worker: place the legos (from a checkpoint's frozen routes),
shard them, keep them through engine start-up, and predict remote-call costs for the planner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.checkpoint.layout import checkpoints_dir
from gppf_dist.checkpoint.named_state import saved_routes
from gppf_dist.config.schema import RunConfig
from gppf_dist.dist.mesh import ExpertGroups
from gppf_dist.model.owners import OwnerMap
from gppf_dist.parallel.expert import EPSession, apply_expert_parallel, record_lego_shapes
from gppf_dist.parallel.placement import contiguous, place_legos, predicted_local
from gppf_dist.parallel.plan import EPLayout


def shard_legos(
    model: nn.Module,
    layout: EPLayout,
    groups: ExpertGroups,
    rank: int,
    input_sizes: dict[str, tuple[int, int]],
    *,
    wire_dtype: torch.dtype = torch.float32,
    check_splits: bool = False,
) -> EPSession:
    """Record each task's lego activation shapes, then keep only this rank's legos.

    `wire_dtype`: the dtype lego activations and their gradients travel in, the training
    precision (bf16 under trainer.precision=bf16); it must be the same on every rank.
    `check_splits`: parallel.check_splits (peers compare split sizes before each dispatch)."""
    shapes = record_lego_shapes(model, input_sizes)
    assert groups.ep is not None
    session = EPSession(
        layout=layout,
        group=groups.ep,
        ep_rank=layout.ep_rank(rank),
        route_of=model.router.route,  # type: ignore[union-attr, arg-type]
        shapes=shapes,
        num_layers=0,
        wire_dtype=wire_dtype,
        check_splits=check_splits,
    )
    apply_expert_parallel(model, session)
    return session


@contextlib.contextmanager
def keep_lego_shards(model: nn.Module, owners: OwnerMap) -> Iterator[None]:
    """DeepSpeed broadcasts every parameter from rank 0 when it wraps the model; lego shards
    differ per rank under expert parallelism, so they are restored afterwards."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if owners.is_lego(n)}
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
        selected = [
            (layer, int(i)) for layer, ids in enumerate(router.route(task).indices) for i in ids
        ]
        row = []
        for rank in range(layout.world_size):
            remote = sum(layout.owner(i, layer) != layout.ep_rank(rank) for layer, i in selected)
            row.append(weight * cost * remote / len(selected))
        out[task] = row
    return out


def placement_from_checkpoint(
    tag_dir: Path | None,
    task_names: list[str],
    batch_sizes: dict[str, int],
    num_legos: int,
    ep_size: int,
) -> tuple[tuple[tuple[int, ...], ...], float, float] | None:
    """(lego placement, its predicted local fraction, the contiguous split's) for a run resuming
    from `tag_dir` with frozen routes, or None (no checkpoint, or routes not frozen yet: the
    contiguous split stays).

    Task costs are the checkpoint's measured per-sample costs times the batch sizes."""
    routes = saved_routes(tag_dir) if tag_dir is not None else None
    if routes is None:
        return None
    index = routes.frozen_index
    selections = {t: index[j].tolist() for j, t in enumerate(task_names) if t in batch_sizes}
    costs = {t: routes.per_sample_s.get(t, 1.0) * batch_sizes[t] for t in selections}
    placement = place_legos(selections, costs, num_legos, ep_size)
    split = contiguous(len(index[0]), num_legos, ep_size)
    return (
        placement,
        predicted_local(selections, costs, placement, ep_size),
        predicted_local(selections, costs, split, ep_size),
    )


def resumed_placement(
    cfg: RunConfig,
    tag: str | None,
    batch_sizes: dict[str, int],
    task_names: list[str],
    is_main: bool,
) -> tuple[tuple[int, ...], ...]:
    """The lego placement for this start (collective): from the frozen routes of checkpoint
    `tag` (the one the start resumes, already verified), read by rank 0; () keeps the
    contiguous split. Routes that freeze during a run take effect at its next start."""
    found: list[Any] = [None]
    if dist.get_rank() == 0:
        tag_dir = checkpoints_dir(cfg.run.dir) / tag if tag else None
        found[0] = placement_from_checkpoint(
            tag_dir, task_names, batch_sizes, cfg.model.num_legos, cfg.parallel.ep_size
        )
    dist.broadcast_object_list(found, src=0)
    if found[0] is None:
        return ()
    placement, local, before = found[0]
    if is_main:
        print(
            f"lego placement from frozen routes: {[list(p) for p in placement]}; predicted "
            f"{local:.0%} of lego calls local (the contiguous split: {before:.0%}), each task "
            "on its most local rank with costs balanced",
            flush=True,
        )
    return placement
