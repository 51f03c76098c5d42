"""Task heads and losses make no host sync (DESIGN.md §6 "GPU discipline"), and stay exact.

On a GPU, reading a value back (`.item()`, `bool(t)`, `.tolist()`, `.cpu()`), data-dependent
shapes (`nonzero`, boolean-mask indexing, `masked_select`, one-argument `torch.where`) and tensors
made from Python data onto a device (`torch.tensor(..., device=d)`: a host-to-device copy) stall
the host until the device catches up. `HostSyncCounter` (bench/host_sync.py) sees these calls,
and the aten ops beneath library functions such as `F.one_hot`, on any device, so this CPU test
catches what would stall a GPU: every task type's head forward, loss and backward must record
none. A second check runs them on the `meta` device, which has no values to read back at all.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

from gppf_dist.bench.host_sync import HostSyncCounter
from gppf_dist.config.model import model_config_from_dict
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.tasks.base import move_to
from gppf_dist.tasks.common.box_ops import generalized_iou
from gppf_dist.tasks.demo import demo_specs, synthetic_batch
from gppf_dist.tasks.detection import (
    DetectionTask,
    FCOSHead,
    _binary_entropy,
    _sigmoid_focal,
    assign,
    decode_boxes,
)
from gppf_dist.tasks.face import arcface_logits
from gppf_dist.tasks.registry import get_task_type

CONF = Path(__file__).parents[2] / "conf" / "model"


@pytest.fixture(scope="module")
def model() -> GppfModel:
    torch.manual_seed(0)
    cfg = model_config_from_dict(yaml.safe_load((CONF / "gppf_r50_tiny.yaml").read_text()))
    return build_model(cfg, demo_specs()).train()


def head_inputs(model: GppfModel, task: str, batch: int = 3) -> tuple[list[Any], Any]:
    """Backbone features (leaf tensors that require grad) and targets for one task."""
    images, targets = synthetic_batch(model.specs[task], batch, torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = model.features(task, images)
    return [None if f is None else f.detach().requires_grad_() for f in feats], targets


TASKS = list(demo_specs())


@pytest.mark.parametrize("task", TASKS)
def test_head_loss_and_backward_make_no_host_sync(model: GppfModel, task: str) -> None:
    head = copy.deepcopy(model.heads[task])  # fresh: includes building any cached state
    feats, targets = head_inputs(model, task)
    groups = torch.zeros(3, dtype=torch.long)
    task_type = get_task_type(model.specs[task].type)
    with HostSyncCounter() as counter:
        for _ in range(2):  # first (cache-building) and steady-state steps alike
            loss = task_type.loss(head(feats), targets, groups)
            loss.sum().backward()
    assert counter.records == [], "\n".join(f"{n} x {s}" for s, n in counter.by_site().items())
    assert loss.shape == (3,) and torch.isfinite(loss).all()


@pytest.mark.parametrize("task", TASKS)
def test_head_loss_and_backward_run_on_meta(model: GppfModel, task: str) -> None:
    """Meta tensors have no values: any read-back or data-dependent shape raises."""
    head = copy.deepcopy(model.heads[task]).to("meta")
    feats, targets = head_inputs(model, task)
    meta_feats = [
        None if f is None else torch.empty_like(f, device="meta").requires_grad_() for f in feats
    ]
    meta = torch.device("meta")
    loss = get_task_type(model.specs[task].type).loss(
        head(meta_feats), move_to(targets, meta), torch.zeros(3, dtype=torch.long, device=meta)
    )
    assert loss.shape == (3,) and loss.device.type == "meta"
    loss.sum().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


# --- exactness: the sync-free versions compute what the straightforward ones did ----------


def reference_grids(head: FCOSHead, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Points, strides and ranges built level by level, as the head once did in every forward."""
    points, strides, ranges = [], [], []
    for li, ((h, w), s) in enumerate(zip(sizes, head.strides, strict=True)):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        points.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() * s + s // 2)
        strides.append(torch.full((h * w,), float(s)))
        lo = 0.0 if li == 0 else 4.0 * s
        hi = math.inf if li == len(sizes) - 1 else 8.0 * s
        ranges.append(torch.tensor([lo, hi]).expand(h * w, 2))
    return [torch.cat(points), torch.cat(strides), torch.cat(ranges)]


def test_detection_grids_are_exact_and_cached(model: GppfModel) -> None:
    head = copy.deepcopy(model.heads["det"])
    feats, _ = head_inputs(model, "det", batch=1)
    out = head(feats)
    sizes = [tuple(f.shape[-2:]) for f in head.fpn([feats[i] for i in head.level_ids])]
    for got, want in zip(
        (out["points"], out["strides"], out["ranges"]), reference_grids(head, sizes), strict=True
    ):
        assert got.dtype == want.dtype and torch.equal(got, want)
    again = head(feats)
    assert again["points"] is out["points"] and again["ranges"] is out["ranges"]
    assert len(head._grids) == 1


def reference_detection_loss(outputs: dict[str, Any], targets: dict[str, Any]) -> torch.Tensor:
    """The detection loss written with boolean-mask selection, one sample at a time."""
    positive, boxes, labels = assign(outputs, targets["boxes"], targets["labels"])
    pred = decode_boxes(outputs)
    pts = outputs["points"]
    losses = []
    for b in range(len(positive)):
        cls, ctr = outputs["cls"][b].float(), outputs["ctr"][b].float()
        pos = positive[b]
        num_pos = pos.sum().clamp(min=1).float()
        onehot = torch.zeros_like(cls)
        onehot[pos] = F.one_hot(labels[b][pos], cls.shape[-1]).to(cls.dtype)
        focal = _sigmoid_focal(cls, onehot).sum() / num_pos
        giou = (1.0 - generalized_iou(pred[b][pos], boxes[b][pos])).sum() / num_pos
        box, p = boxes[b][pos], pts[pos]
        lt, rb = p - box[:, :2], box[:, 2:] - p
        lr = torch.stack([lt[:, 0], rb[:, 0]], -1).clamp(min=1e-6)
        tb = torch.stack([lt[:, 1], rb[:, 1]], -1).clamp(min=1e-6)
        target = torch.sqrt(
            (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
        )
        bce = F.binary_cross_entropy_with_logits(ctr[pos], target, reduction="none")
        ctr_loss = (bce - _binary_entropy(target)).sum() / num_pos
        losses.append(focal + giou + ctr_loss)
    return torch.stack(losses)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_loss_matches_reference(model: GppfModel, seed: int) -> None:
    head = model.heads["det"]
    feats, _ = head_inputs(model, "det", batch=4)
    with torch.no_grad():
        grid = head(feats)
    gen = torch.Generator().manual_seed(seed)
    a, c = len(grid["points"]), head.num_classes
    size = model.specs["det"].input_size
    outputs = {
        **grid,
        "cls": torch.randn(4, a, c, generator=gen).requires_grad_(),
        "reg": (torch.rand(4, a, 4, generator=gen) * 40 + 1).requires_grad_(),
        "ctr": torch.randn(4, a, generator=gen).requires_grad_(),
    }
    _, targets = synthetic_batch(model.specs["det"], 4, gen)
    # padding (label -1) in sample 1, no object at all in sample 2, one large box in sample 3
    targets["labels"][1, 1] = -1
    targets["labels"][2] = -1
    targets["boxes"][3, 0] = torch.tensor([0.0, 0.0, float(size[1]), float(size[0])])
    inputs = [outputs["cls"], outputs["reg"], outputs["ctr"]]
    got = DetectionTask().loss(outputs, targets, torch.zeros(4, dtype=torch.long))
    want = reference_detection_loss(outputs, targets)
    assert assign(outputs, targets["boxes"], targets["labels"])[0].sum(1).min() == 0
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    grads = torch.autograd.grad(got.sum(), inputs)
    ref_grads = torch.autograd.grad(want.sum(), inputs)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


def test_arcface_logits_match_one_hot_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    cos = torch.rand(6, 5, generator=gen) * 2 - 1
    identity = torch.tensor([0, 4, 2, 7, 5, 1])  # 7 and 5: unknown identities (no margin)
    s, m = 30.0, 0.3
    got = arcface_logits(cos, identity, s, m)
    known = identity < 5
    onehot = F.one_hot(identity.clamp(max=4), 5).bool() & known[:, None]
    c = cos.clamp(-1 + 1e-7, 1 - 1e-7)
    margin = torch.where(
        c > math.cos(math.pi - m), torch.cos(torch.acos(c) + m), c - m * math.sin(m)
    )
    assert torch.equal(got, s * torch.where(onehot, margin, c))
