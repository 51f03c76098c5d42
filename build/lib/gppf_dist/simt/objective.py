"""The exact SIMT objective J = sum_t w_t * mean loss of task t over its global batch B_t.

Each rank holds per-sample losses for the streams it read. Its local contribution is
    L_r = sum_{t on r} (w_t / B_t) * sum_{i in local batch of t} loss_i,
so sum_r L_r = J exactly, whatever the plan. Data-parallel engines *average* gradients over the
world, so the local loss is scaled by the world size: mean_r(W * grad L_r) = grad J.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TaskWeights:
    weight: float
    global_batch: int


def local_objective(
    per_sample_loss: torch.Tensor, weights: TaskWeights, world_size: int
) -> torch.Tensor:
    """This rank's share of J for one task, pre-scaled for gradient averaging."""
    scale = weights.weight * world_size / weights.global_batch
    return per_sample_loss.sum() * scale


def task_means(loss_sums: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
    """Global mean loss per task from all-reduced per-task sums."""
    return loss_sums / batch_sizes


def objective(means: torch.Tensor, weights: torch.Tensor) -> float:
    return float((means * weights).sum())
