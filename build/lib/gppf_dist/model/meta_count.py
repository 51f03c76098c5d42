"""Counting on the meta device: a GPPF model's twin holds shapes only, so a forward pass of it
costs no arithmetic whatever the input size (`gppf-model summary` at 800 px in milliseconds).

The twin is a copy of the model's modules whose parameters and buffers are meta tensors of the
same shapes (nothing is copied or initialised). It runs along the real model's
routes: which legos a task selects is read from the model's router (the twin's logits have no
values); the twin's gates are computed from its own router row, so that row is reached by the
gradient exactly as in the real model. MAC and parameter counts depend on shapes only, so they
equal those of a real forward pass (`summary.count_gmacs`, `summary.active_params`).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn

from gppf_dist.model.build import GppfModel
from gppf_dist.model.lego import Route
from gppf_dist.tasks.base import TaskSpec

META = torch.device("meta")


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    empty = torch.empty_like(t, device=META)
    return nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty


def meta_twin(model: GppfModel) -> GppfModel:
    """`model` copied with every parameter and buffer replaced by a meta tensor of its shape
    (no data is copied), in eval mode."""
    memo: dict[int, Any] = {
        id(t): _meta_like(t) for t in itertools.chain(model.parameters(), model.buffers())
    }
    return copy.deepcopy(model, memo).eval()


def twin_route(model: GppfModel, twin: GppfModel, task: str) -> Route:
    """`task`'s legos as `model` routes them now; gates from the twin's router row."""
    indices = model.router.route(task).indices
    logits = twin.router.logits[task]
    index = torch.tensor(indices, device=logits.device)
    return Route(indices=indices, gates=torch.softmax(logits.gather(-1, index), dim=-1))


def twin_forward(twin: GppfModel, task: str, images: torch.Tensor, route: Route) -> Any:
    """`twin(task, images)` with an explicit route (the twin's router cannot select on meta)."""
    levels = getattr(twin.heads[task], "levels", None)
    return twin.heads[task](twin.backbone(twin.normalize(images), route, levels))


def meta_images(spec: TaskSpec, batch: int = 1) -> torch.Tensor:
    """A uint8 batch of the task's input size, shapes only."""
    h, w = spec.input_size
    return torch.empty(batch, 3, h, w, dtype=torch.uint8, device=META)
