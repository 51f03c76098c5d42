"""Optimizer and learning-rate schedule from the trainer section.

Norm weights, biases and router logits are not weight-decayed (decaying router logits would pull
every task towards uniform routing).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gppf_dist.config.schema import TrainerSection


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or "router" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(
    model: nn.Module, trainer: TrainerSection
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.AdamW(param_groups(model, trainer.weight_decay), lr=trainer.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, trainer.warmup_steps, trainer.max_steps)
    )
    return optimizer, scheduler
