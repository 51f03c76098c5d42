"""Micro-batches of a task whose loss couples samples, with the same loss and gradients.

A re-ID share of 16 samples whose triplet groups hold 4 cannot run as micro-batches of 2 by
accumulating per-micro-batch losses: a group's loss needs all of its samples' features at once.
Under a memory cap (`simt.tasks.<t>.max_local_batch`) smaller than a group, such a share runs
in three passes instead (gradient caching):

1. **embed**: every micro-batch is forwarded and its head outputs kept, detached (without a
   graph, so memory holds one micro-batch's activations at a time);
2. **loss**: the task's loss runs once on the outputs of the whole share, concatenated, and its
   gradient with respect to those outputs is taken;
3. **replay**: every micro-batch is forwarded again, with a graph, and back-propagated from its
   part of that gradient (`surrogate`: Σ outputs · gradient, whose gradient is exactly it).

The losses are the whole share's, and the parameter gradients the same sums as one backward
would make (in another order: equal to rounding). The forward is run twice (about a third more
compute for the task; the measured cost table sees it and the planner with it). The model's
forward must be deterministic given its inputs (it is: no dropout, no batch statistics).

Outputs and targets are batch-first tensors nested in dicts, lists and tuples (positional: the
i-th entry of every micro-batch's list is concatenated with the others' i-th).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def concat_parts(parts: list[Any]) -> Any:
    """Micro-batch structures (outputs or targets) joined along the batch dimension."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: concat_parts([p[k] for p in parts]) for k in first}
    if isinstance(first, list | tuple):
        joined = [concat_parts([p[i] for p in parts]) for i in range(len(first))]
        return type(first)(joined) if isinstance(first, tuple) else joined
    raise TypeError(
        f"cannot join micro-batches holding {type(first).__name__}: a task whose loss couples "
        "samples must give batch-first tensors in dicts, lists or tuples"
    )


def float_leaves(obj: Any) -> list[torch.Tensor]:
    """The floating-point tensors in `obj`, in a fixed traversal order."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [t for k in obj for t in float_leaves(obj[k])]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in float_leaves(v)]
    return []


def _detach(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        out = [_detach(v) for v in obj]
        return type(obj)(out) if isinstance(obj, tuple) else out
    return obj


def surrogate(outputs: Any, grads: list[torch.Tensor | None]) -> torch.Tensor:
    """A scalar whose gradient with respect to each output leaf is `grads`' entry."""
    leaves = float_leaves(outputs)
    assert len(leaves) == len(grads), (len(leaves), len(grads))
    total = leaves[0].new_zeros((), dtype=torch.float32)
    for out, grad in zip(leaves, grads, strict=True):
        if grad is not None:
            total = total + (out.float() * grad.float()).sum()
    return total


@dataclass
class ReplayShare:
    """One rank's share of a coupled task across its three passes."""

    batches: list[Any] = field(default_factory=list)
    """The micro-batches as the embed pass read them (the replay forwards them again)."""
    outputs: list[Any] = field(default_factory=list)
    grads: list[list[torch.Tensor | None]] = field(default_factory=list)
    """Per micro-batch, the loss's gradient for each output leaf (set by `loss_pass`)."""
    replayed: int = 0
    """Micro-batches the replay pass has forwarded again so far."""

    def keep(self, batch: Any, outputs: Any) -> None:
        self.batches.append(batch)
        self.outputs.append(_detach(outputs))

    def loss_pass(self, loss_of: Any) -> torch.Tensor:
        """Run `loss_of(outputs, targets, groups) -> (per-sample losses, objective)` on the
        whole share and keep each micro-batch's part of the objective's gradient. Returns the
        per-sample losses, detached."""
        outputs = concat_parts(self.outputs)
        leaves = [t.requires_grad_() for t in float_leaves(outputs)]
        targets = concat_parts([b.targets for b in self.batches])
        groups = torch.cat([b.groups for b in self.batches])
        with torch.enable_grad():
            per_sample, objective = loss_of(outputs, targets, groups)
            grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        sizes = [b.images.shape[0] for b in self.batches]
        split = [g.split(sizes) if g is not None else [None] * len(sizes) for g in grads]
        self.grads = [[s[i] for s in split] for i in range(len(sizes))]
        self.outputs = []  # the replay makes them again, with a graph
        return per_sample.detach()
