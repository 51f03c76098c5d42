"""Semantic segmentation task type: fused FPN decoder, per-pixel CE (ignore 255), mIoU.

Label space: `{"classes": [name, ...]}`; a class named `background` is not coloured by
`gppf-shards inspect`. Annotation: none beyond the image size; the `png` member is the mask, which
comes in `Sample.mask` (HxW uint8 class ids, 255 = ignore). The head returns logits at
the task's input size. The per-sample loss is the
mean CE over that sample's non-ignored pixels (0 for a fully ignored sample).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common.annotation import annotation_error, label_count
from gppf_dist.tasks.common.augment import warp_for
from gppf_dist.tasks.common.drawing import Canvas
from gppf_dist.tasks.common.label_space import count_names, generic_names
from gppf_dist.tasks.common.necks import DecoderHead
from gppf_dist.tasks.common.transforms import (
    check_image,
    plan_geometry,
    to_chw,
    warp_mask,
    whole_image_window,
)

IGNORE = 255


class SegmentationHead(DecoderHead):
    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        num_classes: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__(in_channels, strides, input_size)
        self.classifier = nn.Conv2d(self.decoder.width, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        logits = self.classifier(self.decoder(feats))
        return F.interpolate(logits, size=self.input_size, mode="bilinear", align_corners=False)


class MeanIoU:
    """Confusion matrix → mIoU over classes that occur (in ground truth or prediction)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        mask = targets["mask"].cpu()
        pred = _resize_logits(outputs.detach(), mask.shape[-2:]).argmax(1).cpu()
        valid = mask != IGNORE
        idx = mask[valid] * self.num_classes + pred[valid]
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def state(self) -> torch.Tensor:
        return self.confusion.clone()

    def compute(self, states: list[torch.Tensor]) -> dict[str, float]:
        conf = torch.stack(states).sum(0).double()
        inter = conf.diag()
        union = conf.sum(0) + conf.sum(1) - inter
        present = union > 0
        miou = float((inter[present] / union[present]).mean()) if present.any() else float("nan")
        total = conf.sum()
        acc = float(inter.sum() / total) if total > 0 else float("nan")
        return {"mIoU": miou, "pixel_acc": acc}


def _resize_logits(logits: torch.Tensor, size: Any) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationTask:
    name = "segmentation"
    primary_metric = "mIoU"
    higher_is_better = True
    couples_samples = False
    label_space_keys = ("classes",)
    needs_mask = True
    export_outputs = {"": "logits [B, C, H, W] per pixel at the input size (argmax: class id)"}
    source_window = staticmethod(whole_image_window)

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
        """Nothing beyond the image size: the labels are the mask (`check_mask`)."""

    def check_mask(self, key: str, mask: np.ndarray, label_space: dict[str, Any]) -> None:
        n = label_count(label_space, "classes")
        ids = set(np.unique(mask).tolist()) - {IGNORE}
        bad = sorted(i for i in ids if i >= n)
        if bad:
            raise annotation_error(key, "png", bad, f"mask ids must be < {n} classes or {IGNORE}")

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        assert sample.mask is not None, "a checked segmentation sample has a mask"
        return canvas.mask(sample.mask, label_space)

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        mask = sample.mask
        if mask is None or mask.shape != (h, w) or mask.dtype != np.uint8:
            got = None if mask is None else (mask.shape, mask.dtype)
            raise ValueError(f"sample {sample.key!r}: `mask`={got} must be a {h}x{w} uint8 array")
        bad = (mask != IGNORE) & (mask >= spec.num_classes)
        if bad.any():
            raise ValueError(
                f"sample {sample.key!r}: `mask` has class id {int(mask[bad].max())} "
                f"outside [0, {spec.num_classes}) and not {IGNORE}"
            )
        warped = warp_for(sample, plan_geometry(w, h, spec.input_size), train, rng)
        image, out_mask = warped.image, warp_mask(mask, warped.geo, IGNORE)
        return to_chw(image), {"mask": torch.from_numpy(out_mask.astype(np.int64))}

    def collate(self, targets: list[Any]) -> Any:
        return {"mask": torch.stack([t["mask"] for t in targets])}

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return SegmentationHead(in_channels, strides, spec.num_classes, spec.input_size)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        mask = targets["mask"]
        logits = _resize_logits(outputs, mask.shape[-2:]).float()
        ce = F.cross_entropy(logits, mask, ignore_index=IGNORE, reduction="none")
        valid = (mask != IGNORE).flatten(1)
        return ce.flatten(1).sum(1) / valid.sum(1).clamp(min=1)

    def new_metric(self, spec: TaskSpec) -> MeanIoU:
        return MeanIoU(spec.num_classes)
