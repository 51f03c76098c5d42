"""The one-process reference update of the SGD-based distributed tests: backward of the
objective, clip by the global norm over every trainable parameter (absent gradients count as
zeros, as under ZeRO), one plain SGD step."""

from __future__ import annotations

from typing import Any

import torch


def clipped_sgd_update(
    model: torch.nn.Module, objective: torch.Tensor, lr: float, clip: float
) -> dict[str, Any]:
    """The updated parameters ("params", by name) and the gradient norm before clipping."""
    objective.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    norm = float(torch.stack([p.grad.double().pow(2).sum() for p in params]).sum().sqrt())
    scale = min(1.0, clip / (norm + 1e-6))
    with torch.no_grad():
        for p in params:
            p.sub_(lr * scale * p.grad)
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()}, "norm": norm}
