"""GPPF-ViT: a plain ViT whose MLPs are lego layers (DESIGN.md §2, ours).

Each block is `x ← x + attn(LN(x))` (attention shared by all tasks) followed by the lego layer
`x ← x + Σ_{i∈topk} g_i · mlp_i(LN(x))` where each lego MLP has hidden width
`mlp_ratio · d · ratio`. Normalization is LayerNorm (per token, batch-independent), so results do
not depend on how a task's batch is split across ranks.

Inputs of any size are patchified (patch p, stride p) and get fixed 2-D sine-cosine position
embeddings computed for their grid, so tasks with different input sizes share all parameters and
no position table needs interpolating. The last token map is turned into a simple feature pyramid
(ViTDet style) at strides 4, 8, 16, 32: transposed 2×2 convs (halving channels) below the patch
stride, identity at it, max-pooling above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.config.model import ModelConfig
from gppf_dist.model.lego import LegoLayer, Route
from gppf_dist.tasks.common.layers import group_norm

PYRAMID_STRIDES = (4, 8, 16, 32)


class MLPLego(nn.Module):
    """One lego, a two-layer GELU MLP of hidden width `hidden`."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))

    @torch.no_grad()
    def fold_gate(self, gate: float) -> None:
        """Scale this lego's output by `gate` in place (folded into `fc2`)."""
        self.fc2.weight.mul_(gate)
        self.fc2.bias.mul_(gate)

    @staticmethod
    def fused_mixture(
        legos: Sequence[MLPLego], x: torch.Tensor, gates: torch.Tensor
    ) -> torch.Tensor:
        """`Σ_j gates[j] · legos[j](x)` as two matmuls over the concatenated hidden units."""
        g = gates.to(x.dtype)
        w1 = torch.cat([lego.fc1.weight for lego in legos])
        b1 = torch.cat([lego.fc1.bias for lego in legos])
        hidden = legos[0].fc1.out_features
        w2 = torch.cat([lego.fc2.weight for lego in legos], dim=1)
        w2 = w2 * g.repeat_interleave(hidden)[None, :]
        b2 = (torch.stack([lego.fc2.bias for lego in legos]) * g[:, None]).sum(0)
        return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class LegoBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        hidden = cfg.lego_width(d)
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = LegoLayer(cfg.num_legos, lambda: MLPLego(d, hidden))

    def forward(self, x: torch.Tensor, indices: list[int], gates: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x), indices, gates)


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """[h·w, dim] fixed 2-D sine-cosine position embedding (MAE / MoCo-v3 style)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    ox, oy = xs.reshape(-1, 1) * omega, ys.reshape(-1, 1) * omega
    return torch.cat([ox.sin(), ox.cos(), oy.sin(), oy.cos()], dim=1).float()


class PyramidLevel(nn.Module):
    """Resample the stride-p token map to one pyramid stride."""

    def __init__(self, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = dim
        if stride < patch:
            steps = int(math.log2(patch // stride))
            for i in range(steps):
                layers.append(nn.ConvTranspose2d(channels, channels // 2, 2, stride=2))
                channels //= 2
                if i < steps - 1:
                    layers += [group_norm(channels), nn.GELU()]
        elif stride > patch:
            layers.append(nn.MaxPool2d(stride // patch, ceil_mode=True))
        self.body = nn.Sequential(*layers)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LegoViT(nn.Module):
    """ViT backbone returning a 4-level pyramid (`out_channels`, `strides`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, p = cfg.embed_dim, cfg.patch_size
        self.patch_size, self.embed_dim = p, d
        self.patch_embed = nn.Conv2d(3, d, p, stride=p)
        self.blocks = nn.ModuleList(LegoBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)
        self.pyramid = nn.ModuleList(PyramidLevel(d, p, s) for s in PYRAMID_STRIDES)
        self.out_channels = [level.channels for level in self.pyramid]
        self.strides = list(PYRAMID_STRIDES)
        self._pos: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def position(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Cached per grid, device and dtype (no host-to-device copy per forward)."""
        key = (h, w, like.device, like.dtype)
        if key not in self._pos:
            self._pos[key] = sincos_2d(h, w, self.embed_dim).to(
                device=like.device, dtype=like.dtype
            )
        return self._pos[key]

    def forward(
        self, x: torch.Tensor, route: Route, levels: Sequence[int] | None = None
    ) -> list[torch.Tensor | None]:
        """The pyramid; levels not in `levels` (when given) are skipped and returned as None."""
        x = self.patch_embed(x)
        b, d, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.position(h, w, x)
        for i, block in enumerate(self.blocks):
            indices, gates = route.layer(i)
            tokens = block(tokens, indices, gates)
        fmap = self.norm(tokens).transpose(1, 2).reshape(b, d, h, w)
        return [
            level(fmap) if levels is None or i in levels else None
            for i, level in enumerate(self.pyramid)
        ]
