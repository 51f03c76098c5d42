"""`GppfModel`: backbone + task router + one head per task; `build_model` assembles it.

The model takes raw uint8 images (B×3×H×W), normalises them itself (ImageNet mean/std), routes
them through the backbone with the task's legos and returns that task's head outputs. A head may
declare `levels` (the backbone levels it reads); backbones that can skip the other levels (ViT's
pyramid) return None for them. The model knows nothing about distribution; `param_owners` tells
the SIMT/EP layers which parameters are shared, task-specific (heads and router rows) or legos.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gppf_dist.config.model import ModelConfig
from gppf_dist.model.owners import OwnerMap
from gppf_dist.model.resnet import LegoResNet
from gppf_dist.model.router import TaskRouter
from gppf_dist.tasks.base import TaskSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build_backbone(cfg: ModelConfig) -> nn.Module:
    if cfg.family == "resnet":
        return LegoResNet(cfg)
    from gppf_dist.model.vit import LegoViT

    return LegoViT(cfg)


class GppfModel(nn.Module):
    """The GPPF task-level dynamic network for a fixed set of tasks."""

    def __init__(self, cfg: ModelConfig, specs: dict[str, TaskSpec]) -> None:
        super().__init__()
        from gppf_dist.tasks.registry import get_task_type

        if not specs:
            raise ValueError("`tasks`={} must name at least one task")
        self.cfg = cfg
        self.specs = dict(specs)
        self.task_names: list[str] = list(specs)
        self.backbone = _build_backbone(cfg)
        self.router = TaskRouter(
            self.task_names, self.backbone.num_layers, cfg.num_legos, cfg.top_k, cfg.router
        )
        self.heads = nn.ModuleDict(
            {
                name: get_task_type(spec.type).build_head(
                    list(self.backbone.out_channels), list(self.backbone.strides), spec
                )
                for name, spec in specs.items()
            }
        )
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 B×3×H×W → float, ImageNet-normalised."""
        if images.dtype != torch.uint8:
            raise ValueError(f"`images.dtype`={images.dtype} must be torch.uint8")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"`images.shape`={tuple(images.shape)} must be B x 3 x H x W")
        x = images.to(self.pixel_mean.dtype)
        return (x - self.pixel_mean) / self.pixel_std

    def features(self, task: str, images: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale backbone features of `images` along `task`'s route."""
        if task not in self.heads:
            raise ValueError(f"`task`={task!r} is not one of {self.task_names}")
        levels = getattr(self.heads[task], "levels", None)
        return self.backbone(self.normalize(images), self.router.route(task), levels)

    def forward(self, task: str, images: torch.Tensor) -> Any:
        feats = self.features(task, images)
        return self.heads[task](feats)

    def regularizer(self) -> torch.Tensor:
        """Weighted router regularizers (scalar, data-independent)."""
        return self.router.regularizer()

    def set_step(self, step: int) -> None:
        """Global step: drives the Gumbel schedule and route freezing."""
        self.router.set_step(step)

    def lego_usage(self) -> torch.Tensor:
        """[num_tasks, num_layers, N] current gate weights (0 for unselected), detached."""
        return self.router.usage()

    def active_legos(self, task: str) -> set[tuple[int, int]]:
        """(layer, lego id) pairs `task` routes to at the current step."""
        route = self.router.route(task)
        return {(layer, int(i)) for layer, ids in enumerate(route.indices) for i in ids}

    def param_owners(self) -> OwnerMap:
        """Who owns each parameter: shared, one task, or one lego (`owners.py`)."""
        return OwnerMap.of_gppf(self)


def build_model(cfg: ModelConfig, specs: dict[str, TaskSpec]) -> GppfModel:
    """A `GppfModel` for `cfg` with one head per task in `specs` (dict order = task order)."""
    return GppfModel(cfg, specs)
