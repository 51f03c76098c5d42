"""Person re-identification task type: BNNeck-style embedding, ID CE + batch-hard triplet.

Label space: `{"num_identities": int}` (the training identities). Annotation: `{"identity": int,
"camera": int}` (shards need the camera; `prepare` takes it as optional). Identities at or above
`num_classes` (e.g. unseen test identities) are allowed in eval mode; their ID loss is 0.

Head: pooled last feature `f` → neck → `e`; a bias-free classifier on `e`. The neck of BNNeck is
a batch-independent LayerNorm without bias here (BatchNorm would make a sample's output depend
on how the batch is split over ranks). Loss per sample: ID CE (+ label smoothing 0.1) on the
classifier, plus a batch-hard triplet term on `f` whose positives/negatives are restricted to
samples with the same `groups` id (exactness rule in `tasks/base.py`); an anchor without a
positive or negative in its group contributes 0.
Metric: every sample is a query against all the others (same-identity same-camera matches
excluded when cameras are known, else just itself); cosine similarity on `e`; mAP and rank-1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common.annotation import check_int
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

TRIPLET_MARGIN = 0.3
LABEL_SMOOTHING = 0.1


class EmbeddingHead(nn.Module):
    def __init__(self, in_channels: list[int], num_identities: int) -> None:
        super().__init__()
        dim = in_channels[-1]
        self.levels = [len(in_channels) - 1]
        self.neck = nn.LayerNorm(dim, bias=False)
        self.classifier = nn.Linear(dim, num_identities, bias=False)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        f = feats[-1].mean(dim=(2, 3))
        e = self.neck(f)
        return {"feat": f, "emb": e, "logits": self.classifier(e)}


def identity_ce(logits: torch.Tensor, identity: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per-sample CE; identities outside the classifier's range get loss 0."""
    known = identity < logits.shape[1]
    labels = torch.where(known, identity, torch.full_like(identity, -100))
    return F.cross_entropy(logits, labels, reduction="none", label_smoothing=smoothing)


def batch_hard_triplet(
    feat: torch.Tensor, identity: torch.Tensor, groups: torch.Tensor, margin: float
) -> torch.Tensor:
    d2 = (feat[:, None, :] - feat[None, :, :]).pow(2).sum(-1)
    dist = d2.clamp(min=1e-12).sqrt()
    same_group = groups[:, None] == groups[None, :]
    same_id = identity[:, None] == identity[None, :]
    eye = torch.eye(len(feat), dtype=torch.bool, device=feat.device)
    pos = same_group & same_id & ~eye
    neg = same_group & ~same_id
    hardest_pos = torch.where(pos, dist, torch.full_like(dist, -torch.inf)).max(1).values
    hardest_neg = torch.where(neg, dist, torch.full_like(dist, torch.inf)).min(1).values
    valid = pos.any(1) & neg.any(1)
    loss = F.relu(hardest_pos - hardest_neg + margin)
    return torch.where(valid, loss, torch.zeros_like(loss))


def retrieval_metrics(
    emb: torch.Tensor, identity: torch.Tensor, camera: torch.Tensor
) -> dict[str, float]:
    """All-vs-all retrieval: mAP and rank-1 over queries that have a valid positive."""
    emb = F.normalize(emb.double(), dim=1)
    sim = emb @ emb.T
    n = len(emb)
    same_id = identity[:, None] == identity[None, :]
    has_cam = (camera[:, None] >= 0) & (camera[None, :] >= 0)
    same_cam = has_cam & (camera[:, None] == camera[None, :])
    excluded = torch.eye(n, dtype=torch.bool) | (same_id & same_cam)
    aps, top1 = [], []
    for q in range(n):
        keep = ~excluded[q]
        s, match = sim[q][keep], same_id[q][keep]
        if not match.any():
            continue
        order = torch.argsort(-s, stable=True)
        match = match[order].double()
        hits = match.cumsum(0)
        ranks = torch.arange(1, len(match) + 1, dtype=torch.float64)
        aps.append(float((hits / ranks * match).sum() / match.sum()))
        top1.append(float(match[0]))
    if not aps:
        return {"mAP": float("nan"), "rank1": float("nan")}
    return {"mAP": float(np.mean(aps)), "rank1": float(np.mean(top1))}


def check_identity(key: str, ann: dict[str, Any], label_space: dict[str, Any], split: str) -> None:
    """`identity` is an int, below `num_identities` in the train split only: eval splits hold
    unseen identities (compared by equality, never classified)."""
    bound = label_space.get("num_identities") if split == "train" else None
    check_int(ann, key, "identity", 0, bound)


def identity_caption(ann: dict[str, Any]) -> list[str]:
    return [f"id {ann['identity']}"] + ([f"cam {ann['camera']}"] if "camera" in ann else [])


class ReidTask:
    name = "reid"
    primary_metric = "mAP"
    higher_is_better = True
    couples_samples = True
    label_space_keys = ("num_identities",)
    needs_mask = False
    export_outputs = {
        "feat": "pooled feature [B, D] (what the triplet loss sees)",
        "emb": "embedding [B, D] for retrieval: compare by cosine similarity",
        "logits": "identity logits [B, N] over the training identities",
    }
    source_window = staticmethod(whole_image_window)

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
        check_int(ann, key, "camera", 0)

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        return identity_caption(sample.ann)

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        w, h = check_image(sample)
        identity = require_int_in(sample, "identity", spec.num_classes if train else None)
        camera = require_int_in(sample, "camera", None) if "camera" in sample.ann else -1
        geo = plan_geometry(w, h, spec.input_size)
        image = warp_for(sample, geo, train, rng).image
        target = {"identity": torch.tensor(identity), "camera": torch.tensor(camera)}
        return to_chw(image), target

    def collate(self, targets: list[Any]) -> Any:
        return {k: torch.stack([t[k] for t in targets]) for k in ("identity", "camera")}

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        return EmbeddingHead(in_channels, spec.num_classes)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        identity = targets["identity"]
        ce = identity_ce(outputs["logits"].float(), identity, LABEL_SMOOTHING)
        tri = batch_hard_triplet(outputs["feat"].float(), identity, groups, TRIPLET_MARGIN)
        return ce + tri

    def new_metric(self, spec: TaskSpec) -> EmbeddingMetric:
        return EmbeddingMetric(
            ("identity", "camera"), retrieval_metrics, {"mAP": float("nan"), "rank1": float("nan")}
        )
