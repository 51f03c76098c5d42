"""Detection task type: FPN-lite + FCOS-style anchor-free head, focal + GIoU + centerness losses.

Label space: `{"classes": [name, ...]}`. Annotation: `{"boxes": [[x1, y1, x2, y2], ...] absolute
pixels, "labels": [int, ...]}`.
Targets collate to `boxes` [B, M, 4] and `labels` [B, M] padded with label -1, plus `keys` (the
sample keys, which order the records of the COCO evaluation; see `detection_metric`).

Head (ours): the last three backbone levels → FPNLite → one shared 2-conv GN tower → per location
class logits, `ltrb` distances (`exp(scale_l · x) · stride`) and a centerness logit (one conv).
Assignment (FCOS): a location is positive for a box if it lies inside it, within 1.5 strides of its
centre, and its largest `ltrb` distance fits its level's range (`(4s, 8s]`, first level from 0,
last level unbounded); ties go to the smallest box. Per-sample loss = focal / #pos + mean GIoU
loss over positives + mean centerness BCE over positives (#pos counted in that sample only); the
centerness term has its target entropy subtracted (a KL) so the loss is 0 at a perfect fit.

Device discipline (DESIGN.md §6): the head's location grids are built on the device once per
level sizes and cached, and the loss is dense masked arithmetic (no boolean-mask indexing), so
neither makes the host wait for the device. `decode` (evaluation only) does select on the host.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common.annotation import annotation_error, check_box, label_count
from gppf_dist.tasks.common.augment import warp_for
from gppf_dist.tasks.common.box_ops import batched_nms, generalized_iou
from gppf_dist.tasks.common.detection_metric import mean_average_precision
from gppf_dist.tasks.common.drawing import Canvas, class_colour, label_name
from gppf_dist.tasks.common.label_space import count_names, generic_names
from gppf_dist.tasks.common.layers import conv_gn
from gppf_dist.tasks.common.necks import FPNLite, neck_width
from gppf_dist.tasks.common.transforms import (
    check_image,
    plan_geometry,
    require,
    require_array,
    to_chw,
    whole_image_window,
)

CENTER_RADIUS = 1.5
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.6
MAX_DETECTIONS = 100
PRE_NMS = 1000


class FCOSHead(nn.Module):
    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int) -> None:
        super().__init__()
        self.level_ids = list(range(max(0, len(strides) - 3), len(strides)))
        self.levels = self.level_ids
        self.strides = [strides[i] for i in self.level_ids]
        width = neck_width([in_channels[i] for i in self.level_ids])
        self.num_classes = num_classes
        self.fpn = FPNLite([in_channels[i] for i in self.level_ids], width, smooth=False)
        self.tower = nn.Sequential(conv_gn(width, width, 3), conv_gn(width, width, 3))
        # one conv predicts class logits, ltrb and centerness (channels C, 4, 1)
        self.predict = nn.Conv2d(width, num_classes + 5, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(self.strides)))
        with torch.no_grad():
            self.predict.bias[:num_classes] = -math.log((1 - 0.01) / 0.01)
        self._grids: dict[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def forward(self, feats: list[torch.Tensor]) -> dict[str, Any]:
        maps = self.fpn([feats[i] for i in self.level_ids])
        cls, reg, ctr, sizes = [], [], [], []
        c = self.num_classes
        for li, (m, s) in enumerate(zip(maps, self.strides, strict=True)):
            t = self.tower(m)
            sizes.append((t.shape[-2], t.shape[-1]))
            pred = self.predict(t).flatten(2).transpose(1, 2)  # [B, h·w, C + 5]
            cls.append(pred[..., :c])
            reg.append(torch.exp((self.scales[li] * pred[..., c : c + 4]).clamp(max=10.0)) * s)
            ctr.append(pred[..., c + 4])
        points, strides, ranges = self.grids(tuple(sizes), maps[0].device)
        return {
            "cls": torch.cat(cls, 1),
            "reg": torch.cat(reg, 1),
            "ctr": torch.cat(ctr, 1),
            "points": points,
            "strides": strides,
            "ranges": ranges,
        }

    def grids(
        self, sizes: tuple[tuple[int, int], ...], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Location centres [A, 2], strides [A] and regression ranges [A, 2] (float32).

        They depend only on the levels' sizes, so they are built once per (sizes, device), on
        the device itself (no tensor from Python data, no host-to-device copy), then reused.
        """
        key = (sizes, device)
        if key not in self._grids:
            with torch.inference_mode(False):  # cached tensors must be usable by autograd later
                self._grids[key] = self._make_grids(sizes, device)
        return self._grids[key]

    def _make_grids(
        self, sizes: tuple[tuple[int, int], ...], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        points, strides, ranges = [], [], []
        last = len(self.strides) - 1
        for li, ((h, w), s) in enumerate(zip(sizes, self.strides, strict=True)):
            ys, xs = torch.meshgrid(
                torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
            )
            points.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() * s + s // 2)
            strides.append(torch.full((h * w,), float(s), device=device))
            lo = 0.0 if li == 0 else 4.0 * s
            hi = math.inf if li == last else 8.0 * s
            level_range = torch.full((h * w, 2), lo, device=device)
            level_range[:, 1].fill_(hi)
            ranges.append(level_range)
        return torch.cat(points), torch.cat(strides), torch.cat(ranges)


def assign(
    outputs: dict[str, Any], boxes: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS targets: (positive [B, A], matched boxes [B, A, 4], matched labels [B, A])."""
    if boxes.shape[1] == 0:  # no object in the whole batch: one padding slot per image
        boxes = boxes.new_zeros(boxes.shape[0], 1, 4)
        labels = labels.new_full((labels.shape[0], 1), -1)
    pts, strides, ranges = outputs["points"], outputs["strides"], outputs["ranges"]
    x, y = pts[None, :, 0, None], pts[None, :, 1, None]  # [1, A, 1]
    bx = boxes[:, None, :, :]  # [B, 1, M, 4]
    ltrb = torch.stack(
        [x - bx[..., 0], y - bx[..., 1], bx[..., 2] - x, bx[..., 3] - y], dim=-1
    )  # [B, A, M, 4]
    cx, cy = (bx[..., 0] + bx[..., 2]) / 2, (bx[..., 1] + bx[..., 3]) / 2
    radius = strides[None, :, None] * CENTER_RADIUS
    max_reg = ltrb.max(-1).values
    ok = (
        (ltrb.min(-1).values > 0)
        & ((x - cx).abs() < radius)
        & ((y - cy).abs() < radius)
        & (max_reg >= ranges[None, :, 0, None])
        & (max_reg <= ranges[None, :, 1, None])
        & (labels[:, None, :] >= 0)
    )
    area = (bx[..., 2] - bx[..., 0]) * (bx[..., 3] - bx[..., 1])
    area = torch.where(ok, area.expand_as(ok), torch.full_like(max_reg, math.inf))
    min_area, idx = area.min(-1)
    positive = torch.isfinite(min_area)
    matched_boxes = boxes.gather(1, idx[..., None].expand(-1, -1, 4))
    matched_labels = labels.gather(1, idx)
    return positive, matched_boxes, matched_labels


def decode_boxes(outputs: dict[str, Any]) -> torch.Tensor:
    pts, reg = outputs["points"][None], outputs["reg"].float()
    return torch.cat([pts - reg[..., :2], pts + reg[..., 2:]], dim=-1)


class DetectionMAP:
    """Collects decoded detections and ground truth per image; mAP in `compute`."""

    def __init__(self, input_size: tuple[int, int]) -> None:
        self.input_size = input_size
        self.images: list[dict[str, Any]] = []

    def update(self, outputs: dict[str, Any], targets: dict[str, torch.Tensor]) -> None:
        dets = DetectionTask.decode(outputs, self.input_size)
        keys = targets.get("keys")
        for b, (boxes, scores, labels) in enumerate(dets):
            valid = targets["labels"][b] >= 0
            self.images.append(
                {
                    "key": keys[b] if keys is not None else f"#{len(self.images):09d}",
                    "boxes": boxes.cpu().numpy(),
                    "scores": scores.cpu().numpy(),
                    "labels": labels.cpu().numpy(),
                    "gt_boxes": targets["boxes"][b][valid].cpu().numpy(),
                    "gt_labels": targets["labels"][b][valid].cpu().numpy(),
                }
            )

    def state(self) -> list[dict[str, Any]]:
        return list(self.images)

    def compute(self, states: list[list[dict[str, Any]]]) -> dict[str, float]:
        return mean_average_precision([im for s in states for im in s])


def _clip_boxes(
    boxes: np.ndarray, labels: np.ndarray, image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the image; those under 1 px wide or high are dropped with their labels."""
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return boxes[keep], labels[keep]


class DetectionTask:
    name = "detection"
    primary_metric = "map50"
    higher_is_better = True
    couples_samples = False
    label_space_keys = ("classes",)
    needs_mask = False
    export_outputs = {
        "cls": "class logits [B, A, C] per location (score = sqrt(sigmoid(cls) * sigmoid(ctr)))",
        "reg": "distances [B, A, 4] left, top, right, bottom from the location, input pixels",
        "ctr": "centerness logit [B, A] per location",
        "points": "location centres [A, 2] (x, y) in input pixels: box = points -/+ reg",
        "strides": "pyramid stride [A] of each location",
        "ranges": "box size range [A, 2] each location was trained for",
    }
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
        boxes, labels = ann.get("boxes"), ann.get("labels")
        if not isinstance(boxes, list):
            raise annotation_error(key, "boxes", boxes, "must be a list")
        if not isinstance(labels, list) or len(labels) != len(boxes):
            raise annotation_error(
                key, "labels", labels, f"must be a list of {len(boxes)} class ids"
            )
        n = label_count(label_space, "classes")
        for i, box in enumerate(boxes):
            check_box(key, f"boxes[{i}]", box, width, height)
            label = labels[i]
            if isinstance(label, bool) or not isinstance(label, int):
                raise annotation_error(key, f"labels[{i}]", label, "must be an integer")
            if not 0 <= label < n:
                raise annotation_error(key, f"labels[{i}]", label, f"must be in [0, {n})")

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        boxes, labels = sample.ann["boxes"], sample.ann["labels"]
        for box, label in zip(boxes, labels, strict=True):
            canvas.box(box, class_colour(label), label_name(label_space.get("classes"), label))
        return [f"{len(boxes)} box" + ("es" if len(boxes) != 1 else "")]

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        boxes = require_array(sample, "boxes", 4)
        labels = require(sample, "labels", list)
        if len(labels) != len(boxes):
            raise ValueError(
                f"sample {sample.key!r}: `labels` has {len(labels)} entries for {len(boxes)} boxes"
            )
        for i, (box, label) in enumerate(zip(boxes.tolist(), labels, strict=True)):
            if not (-1 <= box[0] <= box[2] <= w + 1 and -1 <= box[1] <= box[3] <= h + 1):
                raise ValueError(
                    f"sample {sample.key!r}: `boxes[{i}]`={box} is not a box inside {w}x{h}"
                )
            if isinstance(label, bool) or not isinstance(label, int):
                raise ValueError(f"sample {sample.key!r}: `labels[{i}]`={label!r} is not an int")
            if not 0 <= label < spec.num_classes:
                raise ValueError(
                    f"sample {sample.key!r}: `labels[{i}]`={label} is out of range "
                    f"[0, {spec.num_classes})"
                )
        warped = warp_for(sample, plan_geometry(w, h, spec.input_size), train, rng)
        image, mapped = warped.image, warped.geo.boxes(boxes)
        # clipped to the input frame once, after the one warp (training's crop included); a box
        # left under 1 px is dropped, the sample kept
        mapped, classes = _clip_boxes(mapped, np.asarray(labels, np.int64), image)
        if len(classes) < len(labels):
            sample.dropped["boxes"] = len(labels) - len(classes)
        target = {
            "boxes": torch.from_numpy(mapped).reshape(-1, 4),
            "labels": torch.from_numpy(classes),
            "key": sample.key,
        }
        return to_chw(image), target

    def collate(self, targets: list[Any]) -> Any:
        m = max(1, max(len(t["labels"]) for t in targets))
        boxes = torch.zeros(len(targets), m, 4)
        labels = torch.full((len(targets), m), -1, dtype=torch.long)
        for i, t in enumerate(targets):
            boxes[i, : len(t["labels"])] = t["boxes"]
            labels[i, : len(t["labels"])] = t["labels"]
        keys = [t["key"] for t in targets] if all("key" in t for t in targets) else None
        return {"boxes": boxes, "labels": labels, **({"keys": keys} if keys else {})}

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return FCOSHead(in_channels, strides, spec.num_classes)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        cls, ctr = outputs["cls"].float(), outputs["ctr"].float()
        positive, boxes, labels = assign(outputs, targets["boxes"], targets["labels"])
        num_pos = positive.sum(1).clamp(min=1).float()
        # dense one-hot of the positives' labels (a boolean-mask scatter would sync with the host)
        classes = torch.arange(cls.shape[-1], device=labels.device)
        onehot = ((labels[..., None] == classes) & positive[..., None]).to(cls.dtype)
        focal = _sigmoid_focal(cls, onehot).sum(dim=(1, 2)) / num_pos
        pred = decode_boxes(outputs)
        giou = 1.0 - generalized_iou(pred, boxes)
        giou = torch.where(positive, giou, 0.0).sum(1) / num_pos
        pts = outputs["points"][None]
        lt, rb = pts - boxes[..., :2], boxes[..., 2:] - pts
        lr = torch.stack([lt[..., 0], rb[..., 0]], -1).clamp(min=1e-6)
        tb = torch.stack([lt[..., 1], rb[..., 1]], -1).clamp(min=1e-6)
        ctr_target = torch.sqrt(
            (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
        )
        # BCE minus the target's entropy (= KL): same gradient, but 0 at a perfect fit
        ctr_bce = F.binary_cross_entropy_with_logits(
            ctr, ctr_target, reduction="none"
        ) - _binary_entropy(ctr_target)
        ctr_loss = torch.where(positive, ctr_bce, 0.0).sum(1) / num_pos
        return focal + giou + ctr_loss

    @staticmethod
    def decode(
        outputs: dict[str, Any], input_size: tuple[int, int]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per image (boxes [D, 4], scores [D], labels [D]) after score threshold and NMS."""
        with torch.no_grad():
            centerness = torch.sigmoid(outputs["ctr"].float())[..., None]
            scores = torch.sqrt(torch.sigmoid(outputs["cls"].float()) * centerness)
            boxes = decode_boxes(outputs)
            h, w = input_size
            boxes[..., [0, 2]] = boxes[..., [0, 2]].clamp(0, w)
            boxes[..., [1, 3]] = boxes[..., [1, 3]].clamp(0, h)
            num_classes = scores.shape[-1]
            result = []
            for b in range(scores.shape[0]):
                flat = scores[b].flatten()
                cand = torch.nonzero(flat > SCORE_THRESHOLD).squeeze(1)
                cand = cand[flat[cand].argsort(descending=True, stable=True)[:PRE_NMS]]
                loc, lab = cand // num_classes, cand % num_classes
                bx, sc = boxes[b][loc], flat[cand]
                keep = batched_nms(bx, sc, lab, NMS_IOU, max_keep=MAX_DETECTIONS)
                result.append((bx[keep], sc[keep], lab[keep]))
        return result

    def new_metric(self, spec: TaskSpec) -> DetectionMAP:
        return DetectionMAP(spec.input_size)


def _sigmoid_focal(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return alpha_t * ce * (1 - p_t) ** gamma


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * torch.log(p) + (1 - p) * torch.log1p(-p))
