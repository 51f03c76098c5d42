"""Pose task type (top-down keypoints): heatmap head, per-sample MSE, PCK@0.2 metric.

Label space: `{"keypoints": [name, ...], "skeleton": [[a, b], ...]}` (0-based keypoint pairs, for
drawing). Annotation: `{"keypoints": [[x, y, v], ...] one per label-space keypoint, "box": [x1, y1,
x2, y2]}`; v: 0 unlabelled, 1 labelled but occluded, 2 visible.
`prepare` crops the person box enlarged by 1.25 to the input aspect (zero padding outside the
image); flipping swaps `left_*`/`right_*` keypoints. Visible keypoints that leave the input
become v=0 (counted in `Sample.dropped`; the sample is kept).

Heatmaps live at the decoder's stride; keypoint `x` (input pixels) sits at heatmap coordinate
`(x + 0.5) · hw/W - 0.5`. Targets are Gaussians with σ = max(1, heatmap width / 24) (the usual
σ=2 at 48 px width). Per-sample loss: mean over the sample's visible keypoints of the pixel-mean
squared error. PCK@0.2: a visible keypoint is correct when the decoded location is within
0.2 · max(box width, box height) of the truth (box in input pixels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common.annotation import (
    annotation_error,
    check_box,
    is_number,
    label_count,
)
from gppf_dist.tasks.common.augment import warp_for
from gppf_dist.tasks.common.drawing import Canvas
from gppf_dist.tasks.common.label_space import count_names, generic_names
from gppf_dist.tasks.common.necks import DecoderHead
from gppf_dist.tasks.common.transforms import (
    check_image,
    flip_permutation,
    plan_geometry,
    require_array,
    to_chw,
)

BOX_ENLARGE = 1.25
PCK_FRACTION = 0.2

COCO_KEYPOINTS = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
]
COCO_SKELETON = [
    [15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8],
    [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6],
]  # fmt: skip
"""COCO's person skeleton, 0-based (as `coco-keypoints` converts the annotation file's)."""


class HeatmapHead(DecoderHead):
    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        num_keypoints: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__(in_channels, strides, input_size)
        self.out = nn.Conv2d(self.decoder.width, num_keypoints, 1)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, Any]:
        return {"heatmaps": self.out(self.decoder(feats)), "input_hw": self.input_size}


def _scale(outputs: dict[str, Any]) -> tuple[float, float]:
    hm = outputs["heatmaps"]
    h, w = outputs["input_hw"]
    return hm.shape[-1] / w, hm.shape[-2] / h


def target_heatmaps(outputs: dict[str, Any], keypoints: torch.Tensor) -> torch.Tensor:
    hm = outputs["heatmaps"]
    hh, ww = hm.shape[-2:]
    sx, sy = _scale(outputs)
    sigma = max(1.0, ww / 24.0)
    u = (keypoints[..., 0] + 0.5) * sx - 0.5
    v = (keypoints[..., 1] + 0.5) * sy - 0.5
    xs = torch.arange(ww, device=hm.device, dtype=torch.float32)
    ys = torch.arange(hh, device=hm.device, dtype=torch.float32)
    gx = torch.exp(-((xs[None, None, :] - u[..., None]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((ys[None, None, :] - v[..., None]) ** 2) / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def decode_keypoints(outputs: dict[str, Any]) -> torch.Tensor:
    """[B, K, 2] argmax locations (quarter-pixel refined) in input pixels."""
    hm = outputs["heatmaps"].detach().float()
    b, k, hh, ww = hm.shape
    flat = hm.flatten(2).argmax(-1)
    y, x = (flat // ww), (flat % ww)
    pad = torch.nn.functional.pad(hm, (1, 1, 1, 1), mode="replicate")
    bi, ki = torch.meshgrid(torch.arange(b), torch.arange(k), indexing="ij")
    dx = torch.sign(pad[bi, ki, y + 1, x + 2] - pad[bi, ki, y + 1, x])
    dy = torch.sign(pad[bi, ki, y + 2, x + 1] - pad[bi, ki, y, x + 1])
    u, v = x.float() + 0.25 * dx, y.float() + 0.25 * dy
    sx, sy = _scale(outputs)
    return torch.stack([(u + 0.5) / sx - 0.5, (v + 0.5) / sy - 0.5], dim=-1)


class PCK:
    def __init__(self) -> None:
        self.correct = 0
        self.count = 0

    def update(self, outputs: dict[str, Any], targets: dict[str, torch.Tensor]) -> None:
        pred = decode_keypoints(outputs).cpu()
        kps, box = targets["keypoints"].cpu(), targets["box"].cpu()
        visible = kps[..., 2] > 0
        size = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
        dist = (pred - kps[..., :2]).norm(dim=-1)
        ok = dist <= PCK_FRACTION * size[:, None]
        self.correct += int((ok & visible).sum())
        self.count += int(visible.sum())

    def state(self) -> dict[str, int]:
        return {"correct": self.correct, "count": self.count}

    def compute(self, states: list[dict[str, int]]) -> dict[str, float]:
        count = sum(s["count"] for s in states)
        correct = sum(s["correct"] for s in states)
        return {"pck": correct / count if count else float("nan")}


def person_window(box: list[float], out_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box enlarged by BOX_ENLARGE and widened/heightened to the input aspect ratio."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    aspect = out_hw[1] / out_hw[0]
    if w / h > aspect:
        h = w / aspect
    else:
        w = h * aspect
    w, h = w * BOX_ENLARGE, h * BOX_ENLARGE
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


class PoseTask:
    name = "pose"
    primary_metric = "pck"
    higher_is_better = True
    couples_samples = False
    label_space_keys = ("keypoints", "skeleton")
    needs_mask = False
    export_outputs = {
        "heatmaps": "heatmaps [B, K, h, w] at the decoder's stride, one per label_space "
        "keypoint; pixel (u, v) is input point ((u + 0.5) * W / w - 0.5, (v + 0.5) * H / h - 0.5)",
    }

    def label_counts(self, label_space: dict[str, Any]) -> dict[str, int]:
        return {"num_keypoints": count_names(label_space, "keypoints")}

    def placeholder_label_space(self, n: int) -> dict[str, Any]:
        """COCO's keypoints and skeleton for 17, else generic names and no skeleton."""
        if n == len(COCO_KEYPOINTS):
            skeleton = [list(edge) for edge in COCO_SKELETON]
            return {"keypoints": list(COCO_KEYPOINTS), "skeleton": skeleton}
        return {"keypoints": generic_names("keypoint", n), "skeleton": []}

    def check_annotation(
        self,
        key: str,
        ann: dict[str, Any],
        label_space: dict[str, Any],
        width: int,
        height: int,
        split: str,
    ) -> None:
        kps = ann.get("keypoints")
        n = label_count(label_space, "keypoints")
        if not isinstance(kps, list) or len(kps) != n:
            raise annotation_error(
                key, "keypoints", kps, f"must be a list of {n} [x, y, v] triples"
            )
        for i, kp in enumerate(kps):
            if not isinstance(kp, list) or len(kp) != 3 or not all(map(is_number, kp[:2])):
                raise annotation_error(key, f"keypoints[{i}]", kp, "must be [x, y, v]")
            x, y, v = kp
            if v not in (0, 1, 2) or isinstance(v, bool):
                raise annotation_error(
                    key, f"keypoints[{i}]", kp, "must have visibility v in {0, 1, 2}"
                )
            if v > 0 and not (0 <= x <= width and 0 <= y <= height):
                raise annotation_error(
                    key, f"keypoints[{i}]", kp, f"is outside the {width}x{height} image"
                )
        check_box(key, "box", ann.get("box"), width, height)

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        kps = sample.ann["keypoints"]
        canvas.keypoints(kps, label_space.get("skeleton", []))
        return [
            f"{sum(v == 2 for *_, v in kps)} visible",
            f"{sum(v == 1 for *_, v in kps)} occluded",
        ]

    def source_window(
        self, ann: dict[str, Any], width: int, height: int, spec: TaskSpec
    ) -> tuple[float, float]:
        """The enlarged person box (see `TaskType`); ValueError for a box that is not 4 numbers
        (the decoder then decodes at full size and `prepare` names the problem)."""
        box = ann.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f"`box`={box!r} is not 4 numbers")
        x0, y0, x1, y1 = person_window([float(v) for v in box], spec.input_size)
        return x1 - x0, y1 - y0

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        kps = require_array(sample, "keypoints", 3)
        box = require_array(sample, "box", 1).ravel().tolist()
        if kps.shape != (spec.num_keypoints, 3):
            raise ValueError(
                f"sample {sample.key!r}: `keypoints` has shape {kps.shape}, "
                f"expected ({spec.num_keypoints}, 3)"
            )
        in_image = (
            len(box) == 4 and -1 <= box[0] <= box[2] <= w + 1 and -1 <= box[1] <= box[3] <= h + 1
        )
        if not in_image:
            raise ValueError(f"sample {sample.key!r}: `box`={box} is not a box inside {w}x{h}")
        vis = kps[:, 2] > 0
        if not np.isin(kps[:, 2], (0, 1, 2)).all():
            raise ValueError(f"sample {sample.key!r}: `keypoints` visibility must be 0, 1 or 2")
        x, y = kps[:, 0], kps[:, 1]
        outside = vis & ((x < -1) | (x > w + 1) | (y < -1) | (y > h + 1))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"sample {sample.key!r}: `keypoints[{i}]`={kps[i].tolist()} is outside {w}x{h}"
            )
        window = person_window([float(v) for v in box], spec.input_size)
        warped = warp_for(sample, plan_geometry(w, h, spec.input_size, window), train, rng)
        image, geo = warped.image, warped.geo
        out = np.zeros_like(kps)
        out[:, :2] = geo.points(kps[:, :2])
        out[:, 2] = kps[:, 2]
        corners = geo.points(np.asarray([box[:2], box[2:]], dtype=np.float32))
        if geo.flip:  # a flipped left wrist is the right wrist now
            names = list(spec.label_space.get("keypoints", []))
            if len(names) == len(out):
                out = out[flip_permutation(names)]
        out_h, out_w = spec.input_size
        inside = (out[:, 0] >= 0) & (out[:, 0] <= out_w) & (out[:, 1] >= 0) & (out[:, 1] <= out_h)
        lost = int(((out[:, 2] > 0) & ~inside).sum())
        if lost:  # a visible keypoint the crop left out: invisible now, counted, sample kept
            sample.dropped["keypoints"] = lost
        out[~inside, 2] = 0
        mapped_box = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
        target = {"keypoints": torch.from_numpy(out), "box": torch.from_numpy(mapped_box)}
        return to_chw(image), target

    def collate(self, targets: list[Any]) -> Any:
        return {
            "keypoints": torch.stack([t["keypoints"] for t in targets]),
            "box": torch.stack([t["box"] for t in targets]),
        }

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return HeatmapHead(in_channels, strides, spec.num_keypoints, spec.input_size)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        kps = targets["keypoints"]
        target = target_heatmaps(outputs, kps)
        mse = ((outputs["heatmaps"].float() - target) ** 2).mean(dim=(2, 3))
        visible = (kps[..., 2] > 0).float()
        return (mse * visible).sum(1) / visible.sum(1).clamp(min=1)

    def new_metric(self, spec: TaskSpec) -> PCK:
        return PCK()
