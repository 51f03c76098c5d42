"""Multi-label attribute task type: linear head, BCE averaged over attributes, mean accuracy mA.

Label space: `{"attributes": [name, ...]}`. Annotation: `{"attributes": [0/1, ...]}` with one
entry per attribute of the label space.
mA = mean over attributes of (TPR + TNR) / 2 (an undefined rate, for an attribute with no
positives or no negatives, is left out of that attribute's mean).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.classification import PooledLinearHead
from gppf_dist.tasks.common.annotation import annotation_error, label_count
from gppf_dist.tasks.common.augment import warp_for
from gppf_dist.tasks.common.drawing import Canvas, label_name
from gppf_dist.tasks.common.label_space import count_names, generic_names
from gppf_dist.tasks.common.transforms import (
    check_image,
    plan_geometry,
    require,
    to_chw,
    whole_image_window,
)


class MeanAccuracy:
    """Per-attribute confusion counts → mA and label-wise accuracy."""

    def __init__(self, num_attributes: int) -> None:
        self.counts = torch.zeros(4, num_attributes, dtype=torch.int64)  # tp, fn, tn, fp

    def update(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        pred = outputs.detach().cpu() > 0
        gt = targets["attributes"].cpu() > 0.5
        self.counts[0] += (pred & gt).sum(0)
        self.counts[1] += (~pred & gt).sum(0)
        self.counts[2] += (~pred & ~gt).sum(0)
        self.counts[3] += (pred & ~gt).sum(0)

    def state(self) -> torch.Tensor:
        return self.counts.clone()

    def compute(self, states: list[torch.Tensor]) -> dict[str, float]:
        tp, fn, tn, fp = torch.stack(states).sum(0).double()
        pos, neg = tp + fn, tn + fp
        tpr = torch.where(pos > 0, tp / pos.clamp(min=1), torch.nan)
        tnr = torch.where(neg > 0, tn / neg.clamp(min=1), torch.nan)
        per_attr = torch.stack([tpr, tnr]).nanmean(0)
        total = pos + neg
        acc = ((tp + tn).sum() / total.sum()) if total.sum() > 0 else torch.tensor(float("nan"))
        return {"mA": float(per_attr.nanmean()), "accuracy": float(acc)}


class AttributesTask:
    name = "attributes"
    primary_metric = "mA"
    higher_is_better = True
    couples_samples = False
    label_space_keys = ("attributes",)
    needs_mask = False
    export_outputs = {"": "logits [B, N] one per label_space.attributes (sigmoid > 0.5: present)"}
    source_window = staticmethod(whole_image_window)

    def label_counts(self, label_space: dict[str, Any]) -> dict[str, int]:
        return {"num_attributes": count_names(label_space, "attributes")}

    def placeholder_label_space(self, n: int) -> dict[str, Any]:
        return {"attributes": generic_names("attribute", n)}

    def check_annotation(
        self,
        key: str,
        ann: dict[str, Any],
        label_space: dict[str, Any],
        width: int,
        height: int,
        split: str,
    ) -> None:
        attrs = ann.get("attributes")
        n = label_count(label_space, "attributes")
        ok = isinstance(attrs, list) and len(attrs) == n
        if not ok or any(isinstance(a, bool) or a not in (0, 1) for a in attrs):  # type: ignore[union-attr]
            raise annotation_error(key, "attributes", attrs, f"must be a list of {n} values 0/1")

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        names = label_space.get("attributes")
        on = [label_name(names, i) for i, v in enumerate(sample.ann["attributes"]) if v]
        return on or ["(no positive attributes)"]

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        values = require(sample, "attributes", list)
        if len(values) != spec.num_attributes or any(v not in (0, 1) for v in values):
            raise ValueError(
                f"sample {sample.key!r}: `attributes`={values!r} must be "
                f"{spec.num_attributes} values in {{0, 1}}"
            )
        # the attributes (hat, bag, hair, ...) are flip-invariant
        image = warp_for(sample, plan_geometry(w, h, spec.input_size), train, rng).image
        target = {"attributes": torch.tensor(values, dtype=torch.float32)}
        return to_chw(image), target

    def collate(self, targets: list[Any]) -> Any:
        return {"attributes": torch.stack([t["attributes"] for t in targets])}

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return PooledLinearHead(in_channels, spec.num_attributes)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(
            outputs.float(), targets["attributes"], reduction="none"
        )
        return bce.mean(dim=1)

    def new_metric(self, spec: TaskSpec) -> MeanAccuracy:
        return MeanAccuracy(spec.num_attributes)
