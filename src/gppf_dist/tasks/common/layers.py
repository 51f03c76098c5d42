"""Small building blocks shared by heads and backbones (batch-independent normalization only).

They live in `tasks/` because heads need them and `tasks` may not import `model` (the model
imports tasks, see tests/unit/test_layering.py).

Every norm here is GroupNorm or LayerNorm: a sample's output never depends on which other samples
share its batch, so a task's loss is the same however its global batch is split across ranks
(DESIGN.md §2 "Normalization", §5.1). BatchNorm is deliberately absent.
"""

from __future__ import annotations

from torch import nn


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `max_groups` that divides `channels`."""
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def conv_gn(
    in_ch: int,
    out_ch: int,
    kernel: int = 3,
    stride: int = 1,
    act: bool = True,
    max_groups: int = 32,
) -> nn.Sequential:
    """Conv (no bias) -> GroupNorm -> optional ReLU, 'same' padding for odd kernels."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        group_norm(out_ch, max_groups),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
