"""Sub-network extraction: one task's path through a `GppfModel` as a plain dense network.

`extract_task(model, task, input_size)` returns a `DenseTaskNet` holding copies of exactly what
the task runs in eval mode: pixel normalisation, the shared backbone parts, at every lego layer
the task's top-k legos with their gates folded into the lego's output weights (`fold_gate`), and
the task's head. Unused legos, other heads and the router are gone, and no control flow depends
on a route any more, so the network exports with `torch.export` and runs with plain torch.

`DenseTaskNet.forward(images)` takes B×3×H×W uint8 and returns the head's outputs with non-tensor
entries dropped (`tensors_only`), e.g. the pose head's constant `input_hw`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from gppf_dist.model.build import GppfModel
from gppf_dist.model.resnet import LegoResNet, run_stages
from gppf_dist.model.vit import LegoViT, sincos_2d


def tensors_only(obj: Any) -> Any:
    """`obj` without its non-tensor leaves (and containers left empty by removing them)."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        kept = {k: tensors_only(v) for k, v in obj.items()}
        kept = {k: v for k, v in kept.items() if v is not None}
        return kept if kept or not obj else None
    if isinstance(obj, list | tuple):
        items = [v for v in (tensors_only(v) for v in obj) if v is not None]
        if obj and not items:
            return None
        return tuple(items) if isinstance(obj, tuple) else items
    return None


def _folded(legos: nn.ModuleList, indices: list[int], gates: torch.Tensor) -> nn.ModuleList:
    """Copies of the selected legos with their gate folded in."""
    out = nn.ModuleList()
    for i, gate in zip(indices, gates.tolist(), strict=True):
        lego = copy.deepcopy(legos[i])
        lego.fold_gate(gate)
        out.append(lego)
    return out


def _mix(legos: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    out = legos[0](h)
    for lego in legos[1:]:
        out = out + lego(h)
    return out


class DenseResNet(nn.Module):
    """`LegoResNet` along a fixed route: each lego layer is a plain sum of its folded legos."""

    def __init__(self, backbone: LegoResNet, indices: list[list[int]], gates: torch.Tensor):
        super().__init__()
        self.stem = copy.deepcopy(backbone.stem)
        self.projections = copy.deepcopy(backbone.projections)
        self.layers = nn.ModuleList(
            _folded(layer.legos, indices[li], gates[li]) for li, layer in enumerate(backbone.layers)
        )
        self.stage_of_layer = list(backbone.stage_of_layer)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        def mix(li: int, h: torch.Tensor) -> torch.Tensor:
            return _mix(self.layers[li], h)

        return run_stages(self.stem(x), self.projections, self.stage_of_layer, mix)


class DenseViTBlock(nn.Module):
    def __init__(self, block: nn.Module, indices: list[int], gates: torch.Tensor) -> None:
        super().__init__()
        self.norm1 = copy.deepcopy(block.norm1)
        self.attn = copy.deepcopy(block.attn)
        self.norm2 = copy.deepcopy(block.norm2)
        self.mlps = _folded(block.mlp.legos, indices, gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + _mix(self.mlps, self.norm2(x))


class DenseViT(nn.Module):
    """`LegoViT` along a fixed route, for one input size (position embedding precomputed)."""

    def __init__(
        self,
        backbone: LegoViT,
        indices: list[list[int]],
        gates: torch.Tensor,
        input_size: tuple[int, int],
        levels: list[int] | None,
    ) -> None:
        super().__init__()
        p = backbone.patch_size
        grid = (input_size[0] // p, input_size[1] // p)
        self.patch_embed = copy.deepcopy(backbone.patch_embed)
        self.register_buffer("pos", sincos_2d(grid[0], grid[1], backbone.embed_dim))
        self.blocks = nn.ModuleList(
            DenseViTBlock(b, indices[i], gates[i]) for i, b in enumerate(backbone.blocks)
        )
        self.norm = copy.deepcopy(backbone.norm)
        keep = range(len(backbone.pyramid)) if levels is None else levels
        self.levels = sorted(keep)
        self.pyramid = nn.ModuleDict({str(i): copy.deepcopy(backbone.pyramid[i]) for i in keep})
        self.num_levels = len(backbone.pyramid)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        x = self.patch_embed(x)
        b, d, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        fmap = self.norm(tokens).transpose(1, 2).reshape(b, d, h, w)
        return [
            self.pyramid[str(i)](fmap) if i in self.levels else None for i in range(self.num_levels)
        ]


class DenseTaskNet(nn.Module):
    """uint8 images → one task's head outputs (tensors only), with no routing left."""

    def __init__(self, model: GppfModel, task: str, input_size: tuple[int, int]) -> None:
        super().__init__()
        if task not in model.heads:
            raise ValueError(f"`task`={task!r} is not one of {model.task_names}")
        with torch.no_grad():
            route = model.router.route(task) if not model.training else None
        if route is None:
            raise ValueError("`model` must be in eval mode (deterministic routes) to extract")
        gates = route.gates.detach().float().cpu()
        head = model.heads[task]
        levels = getattr(head, "levels", None)
        if isinstance(model.backbone, LegoResNet):
            self.backbone: nn.Module = DenseResNet(model.backbone, route.indices, gates)
        elif isinstance(model.backbone, LegoViT):
            self.backbone = DenseViT(model.backbone, route.indices, gates, input_size, levels)
        else:
            raise ValueError(f"backbone {type(model.backbone).__name__} cannot be extracted")
        self.head = copy.deepcopy(head)
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone())
        self.register_buffer("pixel_std", model.pixel_std.detach().clone())

    def forward(self, images: torch.Tensor) -> Any:
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        return tensors_only(self.head(self.backbone(x)))


def extract_task(model: GppfModel, task: str, input_size: tuple[int, int]) -> DenseTaskNet:
    """The dense eval-mode network of `task` (a copy; `model` is left unchanged)."""
    was_training = model.training
    model.eval()
    try:
        return DenseTaskNet(model, task, input_size).eval()
    finally:
        model.train(was_training)
