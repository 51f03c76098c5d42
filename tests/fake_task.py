"""Test helpers: a minimal `TaskType` for exercising loaders without real heads.

`ResizeTaskType.prepare` resizes the image to `spec.input_size` (and, when training, flips it
with the sample's RNG so augmentation determinism is observable); its target is `ann["label"]`
(or -1), collated into an int64 tensor. An annotation with a "bad" key makes `prepare` raise
ValueError, to exercise the loaders' skip path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from gppf_dist.tasks.base import Metric, Sample, TaskSpec


class ResizeTaskType:
    """A stand-in task type: resize (+ random flip when training), label target."""

    name = "fake"
    primary_metric = "none"
    higher_is_better = True
    couples_samples = False
    needs_mask = False

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        if "bad" in sample.ann:
            raise ValueError(f"sample {sample.key!r}: annotation marked bad")
        h, w = spec.input_size
        img = Image.fromarray(sample.image).resize((w, h), Image.BILINEAR)
        arr = np.array(img)
        if train and rng.random() < 0.5:
            arr = arr[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
        return image, int(sample.ann.get("label", -1))

    def collate(self, targets: list[Any]) -> Any:
        return torch.tensor(targets, dtype=torch.int64)

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        raise NotImplementedError

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def new_metric(self, spec: TaskSpec) -> Metric:
        raise NotImplementedError


def fake_spec(task: str = "cls_object", size: tuple[int, int] = (32, 32)) -> TaskSpec:
    return TaskSpec(name=task, type="classification", input_size=size, num_classes=5)
