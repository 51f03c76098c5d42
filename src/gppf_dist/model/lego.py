"""Lego layers: a layer of `N` interchangeable units of which each task runs only its top-k.

A lego layer computes the gated mixture `Σ_{i∈topk(t,l)} g_{t,l,i} · lego_{l,i}(h)` for the
indices and gates its task's route gives; the residual around it belongs to the backbone block
(ResNet: `relu(x + mix(x))`; ViT: `x + mix(LN(x))`). Only the selected legos are run, so the
unselected ones get no gradient from this task. A lego class may provide a static
`fused_mixture(legos, h, gates)` computing the same mixture in fewer, larger kernels.
Expert parallelism can replace this module with one that dispatches `h` to the legos' owners:
the mixture is its whole contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Route:
    """One task's path through the backbone: per lego layer, the selected legos and gates."""

    indices: list[list[int]]
    """[num_layers][k] selected lego ids (python ints: no device sync inside the backbone)."""
    gates: torch.Tensor
    """[num_layers, k] gate weights, aligned with `indices`."""

    def layer(self, layer: int) -> tuple[list[int], torch.Tensor]:
        return self.indices[layer], self.gates[layer]


class LegoLayer(nn.Module):
    """`num_legos` units built by `make_lego`; `forward` mixes the selected ones."""

    def __init__(self, num_legos: int, make_lego: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.legos = nn.ModuleList(make_lego() for _ in range(num_legos))
        self.fused = True
        """Use the lego class's `fused_mixture(legos, h, gates)` when it has one."""

    def forward(self, h: torch.Tensor, indices: Sequence[int], gates: torch.Tensor) -> torch.Tensor:
        assert len(indices) == gates.shape[0], (indices, gates.shape)
        legos = [self.legos[i] for i in indices]
        fused = getattr(type(legos[0]), "fused_mixture", None)
        if fused is not None and self.fused:
            return fused(legos, h, gates)
        out: torch.Tensor | None = None
        for j, lego in enumerate(legos):
            y = lego(h) * gates[j].to(h.dtype)
            out = y if out is None else out + y
        assert out is not None, "a route selects at least one lego"
        return out
