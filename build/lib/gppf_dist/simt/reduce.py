"""Grouped gradient reduction for SIMT: exact, symmetric, and skipping what nobody produced.

Plain DDP averages every parameter's gradient over every rank, so a task head that only some
ranks ran is diluted, and a head whose task did not run at all still gets a zero-gradient update
(weight decay, Adam moments). Here every rank derives, from the plan alone, the same set of
parameters that *some* rank produced a gradient for this step (`model/owners.py`):

    shared parameters  +  for each task present this step: its head, router row and its legos.

Those are summed over all ranks in fixed-order buckets (every rank issues identical collectives,
zero-filling parameters it did not touch locally); all others get `grad = None` everywhere, so the
optimizer skips them entirely (no decay, no moment update) and no bandwidth is spent on them.
The caller pre-scales local losses (see `objective.py`), so the SUM / world_size is the exact
gradient of J.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

BUCKET_BYTES = 32 * 1024 * 1024


def _buckets(params: list[nn.Parameter]) -> list[list[nn.Parameter]]:
    buckets: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        if not buckets or size + nbytes > BUCKET_BYTES or p.dtype != buckets[-1][0].dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += nbytes
    return buckets


@torch.no_grad()
def reduce_gradients(
    named_params: list[tuple[str, nn.Parameter]],
    produced: set[str],
    world_size: int,
    group: dist.ProcessGroup | None = None,
    extra: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Sum the produced gradients over `group` (default: the world) and divide by the world size
    (losses are pre-scaled by it); drop all other gradients. Legos under expert parallelism pass
    their expert-data-parallel group: each replica already holds its EP group's whole sum.

    `extra` (float32, e.g. step statistics) rides in the first bucket and is returned summed, so
    the step needs no collective of its own."""
    selected = []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if name in produced:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            selected.append(p)
        else:
            p.grad = None
    buckets = _buckets(selected) or [[]]
    summed_extra = None
    for b, bucket in enumerate(buckets):
        parts = [p.grad.reshape(-1) for p in bucket]  # type: ignore[union-attr]
        if b == 0 and extra is not None:
            parts.append(extra.to(torch.float32).reshape(-1))
        if not parts:
            continue
        flat = torch.cat(parts)
        if world_size > 1 and dist.get_world_size(group) > 1:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        if b == 0 and extra is not None:
            summed_extra = flat[flat.numel() - extra.numel() :].clone()
        flat.div_(world_size)
        offset = 0
        for p in bucket:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))  # type: ignore[union-attr]
            offset += n
    return summed_extra


def _sq_norm(params: Iterable[nn.Parameter], device: torch.device) -> torch.Tensor:
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float64, device=device)
    return torch.stack([g.pow(2).sum() for g in grads]).sum().double()


@torch.no_grad()
def sharded_sq_norm(
    params: Iterable[nn.Parameter], group: dist.ProcessGroup | None, device: torch.device
) -> torch.Tensor:
    """Squared L2 norm of gradients split over `group` (each member holds its own share):
    the local share summed over the group (float64 scalar on `device`; no host sync)."""
    sq = _sq_norm(params, device).reshape(1).to(device)
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(sq, group=group)
    return sq.reshape(())


@torch.no_grad()
def scale_to_norm(
    params: Iterable[nn.Parameter], norm: float | torch.Tensor, max_norm: float
) -> None:
    """Clip: scale every gradient by min(1, max_norm / (norm + 1e-6)); max_norm 0 disables.

    With `norm` a device tensor the scale stays on the device (no host sync): computed in
    float64 like the Python float it replaces, then applied in float32."""
    if max_norm <= 0:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if isinstance(norm, torch.Tensor):
        scale = (max_norm / (norm.double() + 1e-6)).clamp(max=1.0).to(grads[0].dtype)
        torch._foreach_mul_(grads, scale)
        return
    factor = min(1.0, max_norm / (norm + 1e-6))
    for g in grads:
        g.mul_(factor)


@torch.no_grad()
def clip_gradients(
    replicated: Iterable[nn.Parameter],
    max_norm: float,
    sharded: Iterable[nn.Parameter] = (),
    shard_group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Clip to the global L2 norm, counting every parameter exactly once; returns the norm as a
    float64 scalar on the parameters' device (reading it is the caller's host sync, after the
    optimizer step).

    After `reduce_gradients` every rank holds the same gradients of replicated parameters, so
    their share is local; expert-parallel legos are split over the EP group (each EP group holds
    all of them once), so their squared norms are summed over `shard_group`.
    """
    replicated, sharded = list(replicated), list(sharded)
    device = (replicated or sharded)[0].device if replicated or sharded else torch.device("cpu")
    sq = _sq_norm(replicated, device) + sharded_sq_norm(sharded, shard_group, device)
    norm = sq.sqrt()
    scale_to_norm(replicated + sharded, norm, max_norm)
    return norm
