"""Optimizer and learning-rate schedule from the trainer section.

Norm weights, biases and router logits are not weight-decayed (decaying router logits would pull
every task towards uniform routing). A task's own parameters (head, router row) get its
`lr_mult`; LambdaLR scales every group's own base lr, so the multipliers survive the schedule.

Router logits use a larger Adam epsilon (`trainer.router_adam_eps`). Adam's first updates are
about lr * sign(gradient), so a logit whose gradient is near zero moves by ±lr depending on
rounding-level noise (e.g. the reduction order of another world size), and a top-k selection
near a tie then flips: a discrete change of route that breaks world-size invariance. With a
larger epsilon such gradients give proportionally small updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from gppf_dist.config.schema import TrainerSection
from gppf_dist.model.owners import OwnerMap


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    owners: OwnerMap | None = None,
    lr_mults: dict[str, float] | None = None,
    router_eps: float = 1e-8,
    select: Callable[[str], bool] | None = None,
    scale: Callable[[str], float] | None = None,
) -> list[dict[str, object]]:
    """Groups keyed by (lr multiplier, decay, router), in a fixed order; only the parameters
    whose name `select` accepts (default: all). `scale(name)` multiplies a parameter's lr too
    (fine-tuning's layer-wise decay)."""
    owners, lr_mults = owners or OwnerMap({}), lr_mults or {}
    groups: dict[tuple[float, bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or (select is not None and not select(name)):
            continue
        task = owners.task(name)
        mult = lr_mults.get(task, 1.0) if task is not None else 1.0
        if scale is not None:
            mult *= scale(name)
        router = name.startswith("router.")
        decay = not (param.ndim <= 1 or router)
        groups.setdefault((mult, decay, router), []).append(param)
    out: list[dict[str, object]] = []
    for (mult, decay, router), params in sorted(groups.items(), key=lambda kv: kv[0]):
        group: dict[str, object] = {
            "params": params,
            "lr": lr * mult,
            "weight_decay": weight_decay if decay else 0.0,
        }
        if router:
            group["eps"] = router_eps
        out.append(group)
    return out


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(
    model: nn.Module,
    trainer: TrainerSection,
    owners: OwnerMap | None = None,
    lr_mults: dict[str, float] | None = None,
    select: Callable[[str], bool] | None = None,
    scale: Callable[[str], float] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with the warm-up + cosine schedule over the parameters `select` accepts (default:
    all). Expert-parallel legos under ZeRO 1/2 get an optimizer of their own (lego_optim.py)."""
    groups = param_groups(
        model, trainer.lr, trainer.weight_decay, owners, lr_mults, trainer.router_adam_eps, select,
        scale,
    )  # fmt: skip
    # Fused: one kernel per step, and it honours `found_inf` (`reduction.skip_if_not_finite`),
    # so a step with a non-finite gradient changes nothing, decided on the device.
    optimizer = torch.optim.AdamW(groups, lr=trainer.lr, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, trainer.warmup_steps, trainer.max_steps)
    )
    return optimizer, scheduler
