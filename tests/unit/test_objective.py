"""The local objectives of any split sum to the single-process SIMT objective."""

from __future__ import annotations

import torch

from gppf_dist.simt.objective import TaskWeights, local_objective


def test_split_sums_to_global_objective() -> None:
    torch.manual_seed(0)
    losses = torch.rand(12, dtype=torch.float64)
    weights = TaskWeights(weight=0.7, global_batch=12)
    full = local_objective(losses, weights, world_size=1)
    world = 3
    parts = [local_objective(chunk, weights, world) for chunk in losses.split([5, 4, 3])]
    # Gradient averaging divides by the world size; the pre-scaled parts undo it exactly.
    assert torch.allclose(sum(parts) / world, full)
    assert torch.allclose(full, 0.7 * losses.mean())
