"""Classification task type: linear head on the pooled last feature, CE (+ smoothing), top-1.

Label space: `{"classes": [name, ...]}`. Annotation: `{"label": int}` in [0, num_classes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common.annotation import check_int, label_count
from gppf_dist.tasks.common.augment import warp_for
from gppf_dist.tasks.common.drawing import Canvas, label_name
from gppf_dist.tasks.common.label_space import count_names, generic_names
from gppf_dist.tasks.common.transforms import (
    check_image,
    plan_geometry,
    require_int_in,
    to_chw,
    whole_image_window,
)


class PooledLinearHead(nn.Module):
    """Global average pool of the last feature map, then a linear layer."""

    def __init__(self, in_channels: list[int], out_features: int) -> None:
        super().__init__()
        self.levels = [len(in_channels) - 1]
        self.fc = nn.Linear(in_channels[-1], out_features)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(feats[-1].mean(dim=(2, 3)))


class TopKAccuracy:
    """Top-1 (and top-5 when there are > 5 classes) accuracy."""

    def __init__(self) -> None:
        self.correct1 = 0
        self.correct5 = 0
        self.count = 0

    def update(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        logits = outputs.detach().float().cpu()
        labels = targets["label"].cpu()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        self.correct1 += int((top[:, 0] == labels).sum())
        self.correct5 += int((top == labels[:, None]).any(dim=1).sum())
        self.count += len(labels)

    def state(self) -> dict[str, int]:
        return {"correct1": self.correct1, "correct5": self.correct5, "count": self.count}

    def compute(self, states: list[dict[str, int]]) -> dict[str, float]:
        count = sum(s["count"] for s in states)
        if count == 0:
            return {"top1": float("nan"), "top5": float("nan")}
        return {
            "top1": sum(s["correct1"] for s in states) / count,
            "top5": sum(s["correct5"] for s in states) / count,
        }


class ClassificationTask:
    name = "classification"
    primary_metric = "top1"
    higher_is_better = True
    couples_samples = False
    label_space_keys = ("classes",)
    needs_mask = False
    export_outputs = {"": "logits [B, C] over label_space.classes (softmax for probabilities)"}
    source_window = staticmethod(whole_image_window)

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def label_counts(self, label_space: dict[str, Any]) -> dict[str, int]:
        return {"num_classes": count_names(label_space, "classes")}

    def placeholder_label_space(self, n: int) -> dict[str, Any]:
        return {"classes": generic_names("class", n)}

    def check_annotation(
        self,
        key: str,
        ann: dict[str, Any],
        label_space: dict[str, Any],
        width: int,
        height: int,
        split: str,
    ) -> None:
        check_int(ann, key, "label", 0, label_count(label_space, "classes"))

    def class_label(self, ann: dict[str, Any]) -> int:
        return int(ann["label"])

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        return [label_name(label_space.get("classes"), sample.ann["label"])]

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        label = require_int_in(sample, "label", spec.num_classes)
        geo = plan_geometry(w, h, spec.input_size)
        image = warp_for(sample, geo, train, rng).image
        return to_chw(image), {"label": torch.tensor(label)}

    def collate(self, targets: list[Any]) -> Any:
        return {"label": torch.stack([t["label"] for t in targets])}

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return PooledLinearHead(in_channels, spec.num_classes)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            outputs.float(),
            targets["label"],
            reduction="none",
            label_smoothing=self.label_smoothing,
        )

    def new_metric(self, spec: TaskSpec) -> TopKAccuracy:
        return TopKAccuracy()
