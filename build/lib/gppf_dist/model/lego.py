"""Lego layers: a layer of `N` interchangeable units of which each task runs only its top-k.

A lego layer computes the gated mixture `Σ_{i∈topk(t,l)} g_{t,l,i} · lego_{l,i}(h)` for the
indices and gates its task's route gives; the residual around it belongs to the backbone block
(ResNet: `relu(x + mix(x))`; ViT: `x + mix(LN(x))`). Only the selected legos are run, so the
unselected ones get no gradient from this task. A lego class may provide a static
`fused_mixture(legos, h, gates)` computing the same mixture in fewer, larger kernels.
Expert parallelism can replace this module with one that dispatches `h` to the legos' owners:
the mixture is its whole contract.

Activation checkpointing (`set_activation_checkpointing`): the mixture then runs under
non-reentrant `torch.utils.checkpoint`, which keeps only its inputs (`h`, the gates) for the
backward pass and recomputes the legos' intermediate activations there; losses and gradients are
unchanged. `mixture` is the one place that does it, so a layer whose forward also exchanges data
(expert parallelism) can checkpoint just its local, collective-free part: recomputation must
never re-run a collective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class Route:
    """One task's path through the backbone: per lego layer, the selected legos and gates."""

    indices: list[list[int]]
    """[num_layers][k] selected lego ids (python ints: no device sync inside the backbone)."""
    gates: torch.Tensor
    """[num_layers, k] gate weights, aligned with `indices`."""

    def layer(self, layer: int) -> tuple[list[int], torch.Tensor]:
        return self.indices[layer], self.gates[layer]


def _mixture(
    legos: Sequence[nn.Module], h: torch.Tensor, gates: torch.Tensor, fused: bool
) -> torch.Tensor:
    fused_mixture = getattr(type(legos[0]), "fused_mixture", None)
    if fused_mixture is not None and fused:
        return fused_mixture(legos, h, gates)
    out = legos[0](h) * gates[0].to(h.dtype)
    for j in range(1, len(legos)):
        out = out + legos[j](h) * gates[j].to(h.dtype)
    return out


def mixture(
    legos: Sequence[nn.Module],
    h: torch.Tensor,
    gates: torch.Tensor,
    fused: bool = True,
    checkpointed: bool = False,
) -> torch.Tensor:
    """`Σ_j gates[j] · legos[j](h)`, recomputed in backward when `checkpointed` and grad is on.

    `fused` uses the lego class's `fused_mixture` when it has one. Checkpointing is skipped
    under `torch.no_grad()` (nothing would be kept anyway). The legos must be collective-free
    and deterministic given their inputs (they are: convolutions, norms, MLPs, no dropout).
    """
    assert len(legos) == gates.shape[0] and legos, (len(legos), gates.shape)
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(lambda x, g: _mixture(legos, x, g, fused), h, gates, use_reentrant=False)
    return _mixture(legos, h, gates, fused)


class LegoLayer(nn.Module):
    """`num_legos` units built by `new_unit`; `forward` mixes the selected ones."""

    def __init__(self, num_legos: int, new_unit: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.legos = nn.ModuleList(new_unit() for _ in range(num_legos))
        self.fused = True
        """Use the lego class's `fused_mixture(legos, h, gates)` when it has one."""
        self.checkpointed = False
        """Recompute the mixture in backward (training only); see `set_activation_checkpointing`."""

    def forward(self, h: torch.Tensor, indices: Sequence[int], gates: torch.Tensor) -> torch.Tensor:
        assert len(indices) == gates.shape[0], (indices, gates.shape)
        legos = [self.legos[i] for i in indices]
        return mixture(legos, h, gates, self.fused, self.checkpointed and self.training)


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> int:
    """Turn activation checkpointing on or off in every `LegoLayer` of `model`.

    Returns the number of layers set (0 means the model has no lego layer, e.g. after expert
    parallelism replaced them: such layers checkpoint their local part through `mixture`).
    """
    layers = [m for m in model.modules() if isinstance(m, LegoLayer)]
    for layer in layers:
        layer.checkpointed = enabled
    return len(layers)
