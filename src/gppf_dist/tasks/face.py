"""Face recognition task type: embedding + ArcFace margin softmax, pair verification accuracy.

Label space: `{"num_identities": int}`. Annotation: `{"identity": int}`. Identities at or above
`num_classes` are allowed in eval mode (their loss is 0). Head: pooled last feature → linear →
LayerNorm (batch-independent, instead of ArcFace's BatchNorm) = embedding; the head also returns
the cosines to the L2-normalised class centres, and `loss` applies the additive angular margin
`cos(θ_y + m)` and scale `s`.

Verification metric: samples are put in a canonical order (by CRC32 of their key, so the result
does not depend on how evaluation was split over ranks); positive pairs are consecutive samples
of the same identity in that order, negative pairs are (i, i + n/2) with different identities,
truncated to equal counts. Accuracy at the best cosine threshold.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common.augment import warp_for
from gppf_dist.tasks.common.drawing import Canvas
from gppf_dist.tasks.common.embedding_metric import EmbeddingMetric
from gppf_dist.tasks.common.label_space import count_value
from gppf_dist.tasks.common.transforms import (
    check_image,
    plan_geometry,
    require_int_in,
    to_chw,
    whole_image_window,
)
from gppf_dist.tasks.reid import check_identity, identity_caption, identity_ce

ARC_SCALE = 30.0
ARC_MARGIN = 0.3
EMBED_DIM = 128


class ArcFaceHead(nn.Module):
    def __init__(self, in_channels: list[int], num_identities: int, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.levels = [len(in_channels) - 1]
        self.fc = nn.Linear(in_channels[-1], dim)
        self.norm = nn.LayerNorm(dim)
        self.centers = nn.Parameter(torch.randn(num_identities, dim) * 0.01)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        emb = self.norm(self.fc(feats[-1].mean(dim=(2, 3))))
        # fp32 even under bf16 autocast: ArcFace scales cos by s (64), so bf16's 3 digits would
        # move a logit by ~0.25, and the margin is applied to acos(cos) near +/-1
        kind = emb.device.type
        fp32 = (
            torch.autocast(kind, enabled=False)
            if torch.amp.is_autocast_available(kind)  # not on `meta`
            else contextlib.nullcontext()
        )
        with fp32:
            cos = F.normalize(emb.float(), dim=1) @ F.normalize(self.centers.float(), dim=1).T
        return {"emb": emb, "cos": cos}


def arcface_logits(cos: torch.Tensor, identity: torch.Tensor, s: float, m: float) -> torch.Tensor:
    cos = cos.float().clamp(-1 + 1e-7, 1 - 1e-7)
    # a dense comparison, not F.one_hot (whose class-range check reads values back to the host
    # on some devices); an identity >= the class count matches no column (identity_ce zeroes it)
    classes = torch.arange(cos.shape[1], device=identity.device)
    onehot = identity[:, None] == classes
    theta = torch.acos(cos)
    # Beyond θ = π - m, cos(θ + m) stops decreasing; fall back to a linear penalty (as ArcFace).
    margin = torch.where(cos > math.cos(math.pi - m), torch.cos(theta + m), cos - m * math.sin(m))
    return s * torch.where(onehot, margin, cos)


def verification_accuracy(
    emb: torch.Tensor, identity: torch.Tensor, order_key: torch.Tensor
) -> dict[str, float]:
    order = torch.argsort(order_key, stable=True)
    emb, identity = F.normalize(emb[order].double(), dim=1), identity[order]
    n = len(emb)
    pos: list[tuple[int, int]] = []
    last: dict[int, int] = {}
    for i, ident in enumerate(identity.tolist()):
        if ident in last:
            pos.append((last[ident], i))
        last[ident] = i
    neg = [(i, (i + n // 2) % n) for i in range(n) if identity[i] != identity[(i + n // 2) % n]]
    count = min(len(pos), len(neg))
    if count == 0:
        return {"verif_acc": float("nan"), "threshold": float("nan")}
    pairs = torch.tensor(pos[:count] + neg[:count])
    labels = torch.cat([torch.ones(count), torch.zeros(count)]).bool()
    sims = (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1)
    return _best_threshold(sims, labels)


def _best_threshold(sims: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Best accuracy of `sim >= threshold` over all thresholds (one sort, no O(n²) sweep)."""
    order = torch.argsort(sims, descending=True, stable=True)
    sims, labels = sims[order], labels[order]
    tp = labels.double().cumsum(0)
    fp = (~labels).double().cumsum(0)
    negatives = float((~labels).sum())
    correct = tp + (negatives - fp)  # predicting positive for the first i + 1 pairs
    last_of_tie = torch.ones_like(labels)
    last_of_tie[:-1] = sims[:-1] != sims[1:]
    correct = torch.where(last_of_tie, correct, torch.full_like(correct, -1.0))
    best = int(correct.argmax())
    if negatives >= float(correct[best]):  # predicting no positive at all is at least as good
        return {"verif_acc": negatives / len(sims), "threshold": math.inf}
    return {"verif_acc": float(correct[best]) / len(sims), "threshold": float(sims[best])}


class FaceTask:
    name = "face"
    primary_metric = "verif_acc"
    higher_is_better = True
    couples_samples = False
    label_space_keys = ("num_identities",)
    needs_mask = False
    export_outputs = {
        "emb": "embedding [B, D] for verification: compare by cosine similarity",
        "cos": "cosines [B, N] to the training identities' class centres",
    }
    source_window = staticmethod(whole_image_window)

    def __init__(self, scale: float = ARC_SCALE, margin: float = ARC_MARGIN) -> None:
        self.scale, self.margin = scale, margin

    def label_counts(self, label_space: dict[str, Any]) -> dict[str, int]:
        return {"num_classes": count_value(label_space, "num_identities")}

    def placeholder_label_space(self, n: int) -> dict[str, Any]:
        return {"num_identities": n}

    def check_annotation(
        self,
        key: str,
        ann: dict[str, Any],
        label_space: dict[str, Any],
        width: int,
        height: int,
        split: str,
    ) -> None:
        check_identity(key, ann, label_space, split)

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        return identity_caption(sample.ann)

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        identity = require_int_in(sample, "identity", spec.num_classes if train else None)
        geo = plan_geometry(w, h, spec.input_size)
        image = warp_for(sample, geo, train, rng, min_scale=0.9).image
        target = {
            "identity": torch.tensor(identity),
            "key_hash": torch.tensor(zlib.crc32(sample.key.encode())),
        }
        return to_chw(image), target

    def collate(self, targets: list[Any]) -> Any:
        return {k: torch.stack([t[k] for t in targets]) for k in ("identity", "key_hash")}

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return ArcFaceHead(in_channels, spec.num_classes)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        identity = targets["identity"]
        logits = arcface_logits(outputs["cos"], identity, self.scale, self.margin)
        return identity_ce(logits, identity, 0.0)

    def new_metric(self, spec: TaskSpec) -> EmbeddingMetric:
        return EmbeddingMetric(
            ("identity", "key_hash"),
            verification_accuracy,
            {"verif_acc": float("nan"), "threshold": float("nan")},
        )
