"""GPPF-ResNet: a ResNet whose bottleneck blocks are lego layers (DESIGN.md §2, ours).

Layout: a shared stem (conv k×k stride 2 + GN + ReLU + 3×3 max-pool as in ResNet, or one
stride-4 conv for the tiny CPU model, whose half-resolution max-pool dominated its step time),
then stages of lego layers. Every block of a stage is a lego layer
`x ← relu(x + Σ_{i∈topk} g_i · lego_i(x))` where a lego is a bottleneck branch 1×1 → 3×3 → 1×1
(GN after each conv) with mid width
`width / expansion · ratio`. Compute parity: a lego's two 1×1 convs scale with `ratio` but its
3×3 conv with `ratio²`, so `ratio = 1/k` activates less than the dense block (3.05 vs 4.1 GMACs
for GPPF-R50 at 224 px, k=2). `gppf_r50` therefore uses `ratio = 0.625` (mid widths stay multiples
of 8): k=2 legos activate 3.98 GMACs, within 3% of ResNet-50 (see conf/model/gppf_r50.yaml).

Stage transitions (shared, not legos): where the width or the resolution changes, the first block
of the stage is preceded by a projection `P(x) = GN(conv1×1(avgpool2×2(x)))` (ResNet-D style: the
average pool keeps all positions, where a strided 1×1 conv would discard 3/4 of them), and the
stage's first lego layer then runs on the projected input: `x ← relu(P(x) + mix(P(x)))`. Thus every
lego of a stage sees the same width and resolution, and legos are interchangeable within a layer.

Normalization is GroupNorm throughout: batch-independent, so a task's result does not depend on
how its batch is split across ranks (the reason BatchNorm is not used).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.config.model import ModelConfig
from gppf_dist.model.lego import LegoLayer, Route
from gppf_dist.tasks.common.layers import conv_gn, group_norm


class BottleneckLego(nn.Module):
    """One lego, the residual branch of a bottleneck block at constant width and resolution."""

    def __init__(self, width: int, mid: int, max_groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, mid, 1, bias=False)
        self.norm1 = group_norm(mid, max_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.norm2 = group_norm(mid, max_groups)
        self.conv3 = nn.Conv2d(mid, width, 1, bias=False)
        self.norm3 = group_norm(width, max_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = F.relu(self.norm2(self.conv2(h)))
        return self.norm3(self.conv3(h))

    @torch.no_grad()
    def fold_gate(self, gate: float) -> None:
        """Scale this lego's output by `gate` in place (folded into the last norm's affine)."""
        self.norm3.weight.mul_(gate)
        self.norm3.bias.mul_(gate)

    @staticmethod
    def fused_mixture(
        legos: Sequence[BottleneckLego], x: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        """`Σ_j gates[j] · legos[j](x)` as 3 (grouped) convs instead of 3k.

        The selected legos' weights are concatenated: the 1×1 reduction becomes one conv to
        k·mid channels, the 3×3 and the 1×1 expansion grouped convs (groups=k). GroupNorm over the
        concatenation with k times the groups normalises each lego's channels exactly as its own
        norm does; the gates are folded into the last norm's affine, and the k outputs summed.
        """
        k = len(legos)
        if k == 1:
            return legos[0](x) * gates[0].to(x.dtype)
        first = legos[0]

        def norm(h: torch.Tensor, name: str, scale: torch.Tensor | None = None) -> torch.Tensor:
            norms = [getattr(lego, name) for lego in legos]
            weight = torch.cat([n.weight for n in norms])
            bias = torch.cat([n.bias for n in norms])
            if scale is not None:
                per_channel = scale.to(h.dtype).repeat_interleave(norms[0].num_channels)
                weight, bias = weight * per_channel, bias * per_channel
            groups = k * norms[0].num_groups
            return F.group_norm(h, groups, weight, bias, norms[0].eps)

        h = F.conv2d(x, torch.cat([lego.conv1.weight for lego in legos]))
        h = F.relu(norm(h, "norm1"))
        w2 = torch.cat([lego.conv2.weight for lego in legos])
        h = F.relu(norm(F.conv2d(h, w2, padding=1, groups=k), "norm2"))
        h = F.conv2d(h, torch.cat([lego.conv3.weight for lego in legos]), groups=k)
        h = norm(h, "norm3", gates)
        b, _, height, width = h.shape
        return h.view(b, k, first.conv3.out_channels, height, width).sum(dim=1)


class StageProjection(nn.Module):
    """Shared transition into a stage: optional 2×2 average pool, then 1×1 conv + GN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, max_groups: int) -> None:
        super().__init__()
        self.pool = (
            nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False) if stride == 2 else None
        )
        self.proj = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, bias=False), group_norm(out_ch, max_groups)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return self.proj(x)


def run_stages(
    x: torch.Tensor,
    projections: nn.ModuleList,
    stage_of_layer: Sequence[int],
    mix: Callable[[int, torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """The stages after the stem: one feature map per stage.

    Layer `li` belongs to stage `stage_of_layer[li]`; entering a stage applies its projection, and
    every layer then does `x ← relu(x + mix(li, x))` (`mix` is the layer's lego mixture). Shared by
    the routed `LegoResNet` and the extracted dense network, so both run the same loop.
    """
    feats: list[torch.Tensor] = []
    stage = -1
    for li, s in enumerate(stage_of_layer):
        if s != stage:
            if stage >= 0:
                feats.append(x)
            stage = s
            x = projections[s](x)
        x = torch.relu(x + mix(li, x))
    feats.append(x)
    return feats


class LegoResNet(nn.Module):
    """Backbone returning one feature map per stage (`out_channels`, `strides`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        g = cfg.gn_groups
        self.stem = nn.Sequential(
            conv_gn(3, cfg.stem_channels, cfg.stem_kernel, stride=cfg.stem_stride, max_groups=g),
            nn.MaxPool2d(3, stride=2, padding=1) if cfg.stem_pool else nn.Identity(),
        )
        stride = cfg.stem_stride * (2 if cfg.stem_pool else 1)
        in_ch = cfg.stem_channels
        self.projections = nn.ModuleList()
        self.layers = nn.ModuleList()
        self.stage_of_layer: list[int] = []
        self.out_channels: list[int] = []
        self.strides: list[int] = []
        for s, (width, blocks) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
            step = 1 if s == 0 else 2
            stride *= step
            if step == 1 and in_ch == width:
                self.projections.append(nn.Identity())
            else:
                self.projections.append(StageProjection(in_ch, width, step, g))
            mid = cfg.lego_width(width)
            for _ in range(blocks):
                self.layers.append(
                    LegoLayer(cfg.num_legos, lambda w=width, m=mid: BottleneckLego(w, m, g))
                )
                self.stage_of_layer.append(s)
            self.out_channels.append(width)
            self.strides.append(stride)
            in_ch = width

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(
        self, x: torch.Tensor, route: Route, levels: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """One map per stage; `levels` is accepted for interface parity (all are computed)."""

        def mix(li: int, h: torch.Tensor) -> torch.Tensor:
            indices, gates = route.layer(li)
            return self.layers[li](h, indices, gates)

        return run_stages(self.stem(x), self.projections, self.stage_of_layer, mix)
