"""Light feature-pyramid necks shared by dense heads (detection, segmentation, pose).

`FPNLite`: 1×1 laterals to a common width, top-down nearest upsampling (to the exact size of the
finer map, so odd input sizes work) and, if `smooth`, a 3×3 GN conv per level (heads that start
with their own 3×3 convs skip it). `FusedDecoder`: an FPNLite whose
levels are upsampled to the finest one and summed (semantic-FPN style), for per-pixel heads;
`DecoderHead` is the base of those heads (segmentation, pose).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.tasks.common.layers import conv_gn


def neck_width(in_channels: list[int]) -> int:
    """Default neck width for a backbone: its finest width, clamped to [32, 256]."""
    return min(256, max(32, in_channels[0]))


class FPNLite(nn.Module):
    """Top-down pyramid over the given levels (finest first); all outputs have `width` channels."""

    def __init__(self, in_channels: list[int], width: int, smooth: bool = True) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.outputs = nn.ModuleList(
            conv_gn(width, width, 3) if smooth else nn.Identity() for _ in in_channels
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        assert len(feats) == len(self.laterals)
        maps = [lat(f) for lat, f in zip(self.laterals, feats, strict=True)]
        for i in range(len(maps) - 2, -1, -1):
            maps[i] = maps[i] + F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
        return [out(m) for out, m in zip(self.outputs, maps, strict=True)]


class FusedDecoder(nn.Module):
    """FPNLite levels upsampled to the finest selected level and summed, then one GN conv."""

    def __init__(self, in_channels: list[int], strides: list[int], min_stride: int = 4) -> None:
        super().__init__()
        levels = [i for i, s in enumerate(strides) if s >= min_stride] or [len(strides) - 1]
        self.levels = levels
        self.stride = strides[levels[0]]
        self.width = neck_width([in_channels[i] for i in levels])
        self.fpn = FPNLite([in_channels[i] for i in levels], self.width, smooth=False)
        self.fuse = conv_gn(self.width, self.width, 3)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        maps = self.fpn([feats[i] for i in self.levels])
        size = maps[0].shape[-2:]
        fused = maps[0]
        for m in maps[1:]:
            fused = fused + F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        return self.fuse(fused)


class DecoderHead(nn.Module):
    """Base of the per-pixel heads: a `FusedDecoder` over the backbone's maps and the input size.

    `levels` (the backbone levels the decoder reads) tells the backbone which maps to compute.
    Subclasses add their own 1×1 output conv on `decoder.width` channels after this `__init__`.
    """

    def __init__(
        self, in_channels: list[int], strides: list[int], input_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.decoder = FusedDecoder(in_channels, strides)
        self.levels = self.decoder.levels
