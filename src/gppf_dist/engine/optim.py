"""Optimizer and learning-rate schedule from the trainer section.

Norm weights, biases and router logits are not weight-decayed (decaying router logits would pull
every task towards uniform routing). A task's own parameters (head, router row) get its
`lr_mult`; LambdaLR scales every group's own base lr, so the multipliers survive the schedule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gppf_dist.config.schema import TrainerSection


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    owners: dict[str, str] | None = None,
    lr_mults: dict[str, float] | None = None,
) -> list[dict[str, object]]:
    """Groups keyed by (task multiplier, decay), in a fixed order."""
    owners, lr_mults = owners or {}, lr_mults or {}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        owner = owners.get(name, "shared")
        mult = lr_mults.get(owner[5:], 1.0) if owner.startswith("task:") else 1.0
        decay = not (param.ndim <= 1 or "router" in name)
        groups.setdefault((mult, decay), []).append(param)
    return [
        {"params": params, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0}
        for (mult, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(
    model: nn.Module,
    trainer: TrainerSection,
    owners: dict[str, str] | None = None,
    lr_mults: dict[str, float] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    groups = param_groups(model, trainer.lr, trainer.weight_decay, owners, lr_mults)
    optimizer = torch.optim.AdamW(groups, lr=trainer.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, trainer.warmup_steps, trainer.max_steps)
    )
    return optimizer, scheduler
