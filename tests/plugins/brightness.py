"""A task type of our own, whole in this one file: how bright an image is.

Loaded with `plugins=[tests/plugins/brightness.py]`, it registers itself on import, and SIMT then
trains it beside the built-in types with no other file edited (tests/integration/
test_task_plugin.py).

Label space: `{"bands": [name, ...]}`, equal bands of brightness from darkest to brightest, for
captions and the band metric. Annotation: `{"brightness": number in [0, 1]}`, the image's
mean grey value / 255. Head: the pooled last feature, one linear output (sigmoid: the predicted
brightness). Per-sample loss: squared error of the prediction. Metric: mean absolute error
(`mae`, lower is better) and the fraction of samples predicted in their own band.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageDraw
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common.annotation import annotation_error, is_number
from gppf_dist.tasks.common.drawing import Canvas, label_name
from gppf_dist.tasks.common.label_space import count_names, generic_names
from gppf_dist.tasks.common.transforms import check_image, plan_geometry, to_chw, warp_sample
from gppf_dist.tasks.registry import register_task_type


def band_of(brightness: torch.Tensor, bands: int) -> torch.Tensor:
    """The band each brightness in [0, 1] falls in, 0 (darkest) to `bands` - 1."""
    return (brightness * bands).long().clamp(0, bands - 1)


class BrightnessHead(nn.Module):
    def __init__(self, in_channels: list[int]) -> None:
        super().__init__()
        self.levels = [len(in_channels) - 1]  # the backbone levels it reads (`model.build`)
        self.fc = nn.Linear(in_channels[-1], 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(feats[-1].mean(dim=(2, 3)))[:, 0]


class BrightnessError:
    """Sum of absolute errors, samples in their own band, and the count."""

    def __init__(self, bands: int) -> None:
        self.bands = bands
        self.abs_error = 0.0
        self.right_band = 0
        self.count = 0

    def update(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        predicted = torch.sigmoid(outputs.detach().float()).cpu()
        truth = targets["brightness"].cpu()
        self.abs_error += float((predicted - truth).abs().sum())
        same = band_of(predicted, self.bands) == band_of(truth, self.bands)
        self.right_band += int(same.sum())
        self.count += len(truth)

    def state(self) -> dict[str, float]:
        return {"abs_error": self.abs_error, "right_band": self.right_band, "count": self.count}

    def compute(self, states: list[dict[str, float]]) -> dict[str, float]:
        count = sum(s["count"] for s in states)
        if count == 0:
            return {"mae": float("nan"), "band_acc": float("nan")}
        return {
            "mae": sum(s["abs_error"] for s in states) / count,
            "band_acc": sum(s["right_band"] for s in states) / count,
        }


class BrightnessTask:
    name = "brightness"
    primary_metric = "mae"
    higher_is_better = False
    couples_samples = False
    label_space_keys = ("bands",)
    needs_mask = False
    export_outputs = {"": "brightness logit [B] (sigmoid: the input's mean grey value / 255)"}

    def label_counts(self, label_space: dict[str, Any]) -> dict[str, int]:
        return {"num_classes": count_names(label_space, "bands")}

    def placeholder_label_space(self, n: int) -> dict[str, Any]:
        return {"bands": generic_names("band", n)}

    def check_annotation(
        self,
        key: str,
        ann: dict[str, Any],
        label_space: dict[str, Any],
        width: int,
        height: int,
        split: str,
    ) -> None:
        value = ann.get("brightness")
        if not is_number(value) or not 0 <= value <= 1:
            raise annotation_error(key, "brightness", value, "must be a number in [0, 1]")

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        """A bar along the bottom edge, as long as the image is bright."""
        value = float(sample.ann["brightness"])
        w, h = canvas.image.size
        bar = max(2, canvas.line_width * 3)
        ImageDraw.Draw(canvas.image).rectangle(
            (0, h - bar, value * (w - 1), h - 1), fill=(255, 200, 0)
        )
        bands = label_space.get("bands", [])
        band = min(int(value * len(bands)), len(bands) - 1) if bands else 0
        return [f"brightness {value:.2f}", label_name(bands, band)]

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        value = sample.ann.get("brightness")
        if not is_number(value) or not 0 <= value <= 1:
            raise ValueError(f"sample {sample.key!r}: `brightness`={value!r} is not in [0, 1]")
        image = warp_sample(sample, plan_geometry(w, h, spec.input_size))
        if train and rng.random() < 0.5:  # a mirror image is as bright
            image = image[:, ::-1]
        return to_chw(image), {"brightness": torch.tensor(float(value))}

    def collate(self, targets: list[Any]) -> Any:
        return {"brightness": torch.stack([t["brightness"] for t in targets])}

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return BrightnessHead(in_channels)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        predicted = torch.sigmoid(outputs.float())
        return F.mse_loss(predicted, targets["brightness"], reduction="none")

    def new_metric(self, spec: TaskSpec) -> BrightnessError:
        return BrightnessError(spec.num_classes)


register_task_type(BrightnessTask())
