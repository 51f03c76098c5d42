"""Expert-parallel legos under ZeRO 1/2: reduced, clipped and stepped beside DeepSpeed.

ZeRO 1/2 partition a parameter's gradient and optimizer state over the whole world, which
assumes every rank holds the same parameters. Lego shards differ between the ranks of an EP
group, so they stay out of DeepSpeed's optimizer, and this one takes them:

  * their gradients are summed over the expert-data-parallel group (`simt/reduce.py`; each
    replica already holds its EP group's sum) and divided by the world size, as DeepSpeed does
    for the rest;
  * their squared norm, summed over the EP group, joins DeepSpeed's clipping norm
    (`deepspeed.count_in_grad_norm`), so one global norm clips everything;
  * AdamW steps them with the same schedule and the same parameter-group rules.

Each rank holds the optimizer state of its own legos only: 1/E of it, as of the legos.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.simt.reduce import reduce_gradients, scale_to_norm, sharded_sq_norm


class LegoOptimizer:
    def __init__(
        self,
        named_params: list[tuple[str, nn.Parameter]],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        world_size: int,
        edp_group: dist.ProcessGroup | None,
        ep_group: dist.ProcessGroup | None,
    ) -> None:
        self.named = named_params
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.world_size = world_size
        self.edp_group = edp_group
        self.ep_group = ep_group
        self.sq_norm = torch.zeros((), dtype=torch.float64)
        """The legos' squared gradient norm of the current step, over all legos (after reduce)."""

    def reduce(self) -> None:
        """After the backward passes, before DeepSpeed's step (which reads `sq_norm`).

        Every lego this rank holds takes part (zero-filled where no task routed to it), as every
        parameter does under ZeRO 1/2."""
        reduce_gradients(
            self.named, {n for n, _ in self.named}, self.world_size, group=self.edp_group
        )
        device = self.named[0][1].device if self.named else torch.device("cpu")
        self.sq_norm = sharded_sq_norm((p for _, p in self.named), self.ep_group, device)

    def step(self, global_norm: float, max_norm: float, applied: bool) -> None:
        """Follow DeepSpeed's step: if it was applied, clip by the global norm it used, step and
        advance the schedule; if it skipped the step (a non-finite norm, the legos' included),
        skip it too, so both keep the same parameters' history and the same schedule. Clear."""
        if applied:
            scale_to_norm([p for _, p in self.named], global_norm, max_norm)
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def follow_schedule(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        """After a resume: take the position of the restored main schedule, and its current
        learning-rate factor, so both optimizers continue in step."""
        self.scheduler.last_epoch = scheduler.last_epoch
        lambdas = self.scheduler.lr_lambdas  # type: ignore[attr-defined]
        for group, base, fn in zip(
            self.optimizer.param_groups, self.scheduler.base_lrs, lambdas, strict=True
        ):
            group["lr"] = base * fn(scheduler.last_epoch)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # type: ignore[attr-defined]
