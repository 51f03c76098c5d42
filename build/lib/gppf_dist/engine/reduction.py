"""How one SIMT step reduces its gradients and steps the optimizer: one object per strategy,
chosen once when the step is assembled (`assemble.py`).

* `SimtReduction` (ZeRO 0): SIMT's own exact reduction (`simt/reduce.py`): only the parameters
  some rank produced a gradient for are summed, absent tasks are untouched; SIMT clips; DeepSpeed
  only steps the optimizer.
* `SimtExpertReduction` (ZeRO 0, expert parallelism): the same, with the lego shards summed over
  their expert-data-parallel group and counted once in the global norm.
* `ZeroReduction` (ZeRO 1/2): DeepSpeed partitions, reduces and clips; every parameter joins
  every step. Expert-parallel legos are reduced and stepped beside it (`lego_optim.py`), clipped
  by the same global norm.

Every strategy issues the same collectives on every rank, whatever tasks the plan gave it
(DESIGN.md §5.4), and folds the step statistics into its first reduction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.engine.deepspeed import Engine
from gppf_dist.engine.lego_optim import LegoOptimizer
from gppf_dist.model.owners import OwnerMap
from gppf_dist.simt.reduce import clip_gradients, reduce_gradients

Contexts = contextlib.AbstractContextManager[list[contextlib.AbstractContextManager]]
"""Entered around a step's backward passes; yields one context per backward."""
ActiveLegos = Callable[[str], set[tuple[int, int]]]
"""task -> {(layer, lego id)} it routes to at the current step."""


class Reduction(Protocol):
    def backward_contexts(self, engine: Engine, num_backwards: int) -> Contexts:
        """Contexts for the step's backward passes: gradients are reduced once, after them."""
        ...

    def extra_loss(self, module: nn.Module, regularizer: torch.Tensor) -> torch.Tensor:
        """What the step's first backward adds to its loss."""
        ...

    def reduce_and_step(
        self, engine: Engine, present: set[str], stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce gradients and `stats` (summed over ranks), clip, step the optimizer.
        Returns (the summed statistics, the global gradient norm), both on the device."""
        ...


def _zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero connected to every trainable parameter."""
    return sum(p.sum() * 0.0 for p in module.parameters() if p.requires_grad)  # type: ignore[return-value]


def skip_if_not_finite(optimizer: torch.optim.Optimizer, grad_norm: torch.Tensor) -> None:
    """Make the coming optimizer step a no-op when the global gradient norm is not finite (a
    task's loss or gradients became NaN/inf): every rank has the same norm, so every rank skips.

    Decided on the device, with no host sync: fused optimizers (ours, `optim.py`) read
    `found_inf` and leave parameters, moments and step counts as they were. Other optimizers
    (tests pass plain SGD) are stepped as given."""
    if getattr(optimizer, "defaults", {}).get("fused"):
        optimizer.found_inf = (~torch.isfinite(grad_norm)).to(torch.float32)  # type: ignore[attr-defined]


def _no_sync(engine: Engine, n: int) -> Contexts:
    return contextlib.nullcontext([engine.no_sync() for _ in range(n)])


@dataclass
class SimtReduction:
    """ZeRO 0, every parameter replicated: one reduction, statistics riding along."""

    owners: OwnerMap
    active_legos: ActiveLegos
    world_size: int
    grad_clip: float

    def backward_contexts(self, engine: Engine, num_backwards: int) -> Contexts:
        return _no_sync(engine, num_backwards)

    def extra_loss(self, module: nn.Module, regularizer: torch.Tensor) -> torch.Tensor:
        return regularizer

    def reduce_and_step(
        self, engine: Engine, present: set[str], stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        produced = self.owners.produced(present, {t: self.active_legos(t) for t in present})
        named = list(engine.module.named_parameters())
        totals = reduce_gradients(named, produced, self.world_size, extra=stats)
        grad_norm = clip_gradients([p for _, p in named], self.grad_clip)
        skip_if_not_finite(engine.optimizer, grad_norm)
        engine.step()
        return totals, grad_norm


@dataclass
class SimtExpertReduction(SimtReduction):
    """ZeRO 0 with expert parallelism: replicated parameters over the world, lego shards over
    their expert-data-parallel group; one global norm clips both."""

    edp_group: dist.ProcessGroup | None
    ep_group: dist.ProcessGroup | None

    def reduce_and_step(
        self, engine: Engine, present: set[str], stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        produced = self.owners.produced(present, {t: self.active_legos(t) for t in present})
        named = list(engine.module.named_parameters())
        dense = [(n, p) for n, p in named if not self.owners.is_lego(n)]
        sharded = [(n, p) for n, p in named if self.owners.is_lego(n)]
        totals = reduce_gradients(dense, produced, self.world_size, extra=stats)
        reduce_gradients(sharded, produced, self.world_size, group=self.edp_group)
        grad_norm = clip_gradients(
            [p for _, p in dense], self.grad_clip, [p for _, p in sharded], self.ep_group
        )
        skip_if_not_finite(engine.optimizer, grad_norm)
        engine.step()
        return totals, grad_norm


@dataclass
class ZeroReduction:
    """ZeRO 1/2: DeepSpeed reduces, clips and steps; `legos` (expert parallelism) beside it."""

    grad_clip: float
    legos: LegoOptimizer | None = None

    def backward_contexts(self, engine: Engine, num_backwards: int) -> Contexts:
        return engine.accumulate(num_backwards)

    def extra_loss(self, module: nn.Module, regularizer: torch.Tensor) -> torch.Tensor:
        # DeepSpeed's ZeRO reduction expects a gradient for every parameter it partitions.
        return regularizer + _zero_loss(module)

    def reduce_and_step(
        self, engine: Engine, present: set[str], stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        if self.legos is not None:  # before the step: DeepSpeed's clipping norm includes them
            self.legos.reduce()
        engine.step()
        norm = engine.global_grad_norm()  # DeepSpeed's ZeRO step has read its norm already
        if self.legos is not None:
            self.legos.step(norm, self.grad_clip, applied=engine.step_applied())
        return stats, torch.tensor(norm, dtype=torch.float64, device=stats.device)
