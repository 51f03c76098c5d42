"""Metrics on hand-made cases with known values; states merge across 'ranks'."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from gppf_dist.tasks.attributes import MeanAccuracy
from gppf_dist.tasks.common.box_ops import batched_nms, box_iou
from gppf_dist.tasks.common.detection_metric import mean_average_precision
from gppf_dist.tasks.demo import demo_specs
from gppf_dist.tasks.face import _best_threshold, verification_accuracy
from gppf_dist.tasks.registry import TASK_TYPES, get_task_type
from gppf_dist.tasks.reid import retrieval_metrics

SPECS = demo_specs()


def merged(type_name: str, batches: list[tuple[object, object]]) -> dict[str, float]:
    """Each batch on its own 'rank'; states pickled and merged like the engine does."""
    spec = next(s for s in SPECS.values() if s.type == type_name)
    task = get_task_type(type_name)
    states = []
    for outputs, targets in batches:
        metric = task.new_metric(spec)
        metric.update(outputs, targets)
        states.append(pickle.loads(pickle.dumps(metric.state())))
    result = task.new_metric(spec).compute(states)
    assert task.primary_metric in result
    return result


def test_classification_top1() -> None:
    logits = torch.eye(10)[[0, 1, 2, 3]]
    res = merged(
        "classification",
        [
            (logits[:2], {"label": torch.tensor([0, 5])}),
            (logits[2:], {"label": torch.tensor([2, 3])}),
        ],
    )
    assert res["top1"] == 0.75


def test_attributes_mean_accuracy() -> None:
    # attribute 0: TP=1, FN=1, TN=2 → (0.5 + 1) / 2; attribute 1: TP=2, TN=1, FP=1 → (1 + 0.5) / 2
    logits = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [-1.0, 1.0]])
    gt = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    metric = MeanAccuracy(2)
    metric.update(logits, {"attributes": gt})
    res = metric.compute([metric.state()])
    assert math.isclose(res["mA"], 0.75)
    assert math.isclose(res["accuracy"], 6 / 8)


def test_segmentation_miou() -> None:
    n = SPECS["seg"].num_classes
    mask = torch.tensor([[[0, 0], [1, 255]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])  # class 0: I=1,U=2; class 1: I=1,U=2
    logits = torch.nn.functional.one_hot(pred, n).permute(0, 3, 1, 2).float()
    res = merged("segmentation", [(logits, {"mask": mask})])
    assert math.isclose(res["mIoU"], 0.5)
    assert math.isclose(res["pixel_acc"], 2 / 3)


def test_detection_map_known_values() -> None:
    gt = {
        "gt_boxes": torch.tensor([[0.0, 0, 10, 10]]).numpy(),
        "gt_labels": torch.tensor([0]).numpy(),
    }
    perfect = {
        "boxes": gt["gt_boxes"],
        "scores": torch.tensor([0.9]).numpy(),
        "labels": gt["gt_labels"],
        **gt,
    }
    assert mean_average_precision([perfect]) == pytest.approx({"map50": 1.0, "map": 1.0})
    # a higher-scored false positive first: precision 0.5 at the only recall level → AP 0.5
    fp_first = {
        "boxes": torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10]]).numpy(),
        "scores": torch.tensor([0.95, 0.9]).numpy(),
        "labels": torch.tensor([0, 0]).numpy(),
        **gt,
    }
    assert math.isclose(mean_average_precision([fp_first])["map50"], 0.5)
    # IoU 0.81 (box shifted by 1 on 10×10 → 90/110... ) counts at 0.5 but not at 0.95
    shifted = dict(perfect, boxes=torch.tensor([[1.0, 0, 11, 10]]).numpy())
    res = mean_average_precision([shifted])
    assert res["map50"] == pytest.approx(1.0) and 0.5 < res["map"] < 1.0


def test_detection_metric_through_decode() -> None:
    spec = SPECS["det"]
    num_points = 12 * 12 + 6 * 6 + 3 * 3
    cls = torch.full((1, num_points, spec.num_classes), -10.0)
    cls[0, 0, 1] = 10.0  # location (4, 4) at stride 8
    outputs = {
        "cls": cls,
        "ctr": torch.full((1, num_points), 10.0),
        "reg": torch.full((1, num_points, 4), 4.0),
        "points": torch.cat(
            [
                torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="xy"), -1)
                .reshape(-1, 2)
                .float()
                * s
                + s // 2
                for n, s in ((12, 8), (6, 16), (3, 32))
            ]
        ),
    }
    targets = {"boxes": torch.tensor([[[0.0, 0, 8, 8]]]), "labels": torch.tensor([[1]])}
    res = merged("detection", [(outputs, targets)])
    assert res["map50"] == pytest.approx(1.0)


def test_batched_nms_suppresses_within_class_only() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 2, 3]


def _nms_by_full_matrix(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float
) -> list[int]:
    """Greedy NMS the textbook way: the whole N x N IoU matrix, every box visited."""
    order = scores.argsort(descending=True, stable=True)
    shifted = boxes[order] + labels[order].to(boxes.dtype)[:, None] * (boxes.max() + 1.0)
    iou = box_iou(shifted, shifted)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(int(order[i]))
            suppressed |= iou[i] > threshold
    return keep


@pytest.mark.parametrize("n", [1, 7, 300, 1000])
def test_batched_nms_stopping_at_max_keep_gives_the_head_of_the_full_result(n: int) -> None:
    """Decoding keeps 100 detections of up to 1,000 candidates: the early stop and the row-wise
    IoU give exactly the first `max_keep` indices of the full greedy pass (ties in score
    included), for several thresholds."""
    g = torch.Generator().manual_seed(n)
    corner = torch.rand(n, 2, generator=g) * 200
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 60], dim=1)
    scores = torch.rand(n, generator=g)
    scores[::5] = 0.5
    labels = torch.randint(0, 4, (n,), generator=g)
    for threshold in (0.3, 0.6, 0.9):
        full = _nms_by_full_matrix(boxes, scores, labels, threshold)
        assert batched_nms(boxes, scores, labels, threshold).tolist() == full
        for max_keep in (0, 1, 3, 100):
            got = batched_nms(boxes, scores, labels, threshold, max_keep=max_keep).tolist()
            assert got == full[:max_keep], (threshold, max_keep)


def test_pose_pck() -> None:
    k = SPECS["pose"].num_keypoints
    heatmaps = torch.zeros(1, k, 16, 12)
    heatmaps[0, :, 4, 3] = 1.0  # every keypoint decoded at heatmap (3, 4) → input (13.5, 17.5)
    kps = torch.zeros(1, k, 3)
    kps[0, :, 0], kps[0, :, 1], kps[0, :, 2] = 13.5, 17.5, 2
    kps[0, 0, :2] = torch.tensor([40.0, 60.0])  # far off
    kps[0, 1, 2] = 0  # invisible, not counted
    box = torch.tensor([[0.0, 0, 48, 64]])
    outputs = {"heatmaps": heatmaps, "input_hw": (64, 48)}
    res = merged("pose", [(outputs, {"keypoints": kps, "box": box})])
    assert math.isclose(res["pck"], (k - 2) / (k - 1))


def test_reid_map_and_rank1() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.6], [0.0, 1.0]])
    ident = torch.tensor([0, 0, 1, 0])
    # without cameras, only the query itself is excluded; q2 has no positive and is skipped.
    # q0: 1(+) .99, 2(-) .8, 3(+) 0 → AP (1 + 2/3)/2; q1 likewise; q3: 2(-), 1(+), 0(+) → 7/12
    res = retrieval_metrics(emb, ident, torch.full((4,), -1))
    assert math.isclose(res["mAP"], (5 / 6 + 5 / 6 + 7 / 12) / 3)
    assert math.isclose(res["rank1"], 2 / 3)
    # with cameras, same-id same-camera matches leave the gallery: q0 loses 1, q1 loses 0
    res = retrieval_metrics(emb, ident, torch.tensor([0, 0, 1, 1]))
    assert math.isclose(res["mAP"], (0.5 + 0.5 + 7 / 12) / 3)
    assert res["rank1"] == 0.0


def test_face_verification() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    ident = torch.tensor([0, 0, 1, 1])
    res = verification_accuracy(emb, ident, torch.arange(4))
    assert res["verif_acc"] == 1.0
    # pairs do not depend on the order the samples arrive in (canonical key order)
    perm = torch.tensor([2, 0, 3, 1])
    assert verification_accuracy(emb[perm], ident[perm], torch.arange(4)[perm]) == res


def test_every_type_declares_primary_metric() -> None:
    for t in TASK_TYPES.values():
        assert t.primary_metric and isinstance(t.higher_is_better, bool)


def test_face_best_threshold_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    sims = torch.randint(0, 6, (40,), generator=gen).double() / 5  # with ties
    labels = torch.rand(40, generator=gen) < sims.float()
    brute = max(float(((sims >= t) == labels).double().mean()) for t in [*sims.tolist(), 9.0])
    assert math.isclose(_best_threshold(sims, labels)["verif_acc"], brute)


def test_detection_map_missed_object_and_two_classes() -> None:
    def image(boxes, scores, labels, gt_boxes, gt_labels):  # noqa: ANN001, ANN202
        return {
            "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=np.float32),
            "labels": np.asarray(labels, dtype=np.int64),
            "gt_boxes": np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4),
            "gt_labels": np.asarray(gt_labels, dtype=np.int64),
        }

    box = [0.0, 0.0, 10.0, 10.0]
    a = image([box, box], [0.9, 0.8], [0, 1], [box, box], [0, 1])
    b = image([], [], [], [box], [0])  # class 0 missed here: recall tops out at 1/2
    res = mean_average_precision([a, b])
    assert math.isclose(res["map50"], (51 / 101 + 1.0) / 2)


def test_detection_map_does_not_depend_on_the_split_over_ranks() -> None:
    """Tied scores across images: records are evaluated in key order, whatever the rank order."""
    box, off = [0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]

    def image(key: str, hit: bool) -> dict[str, object]:
        return {
            "key": key,
            "boxes": np.asarray([box if hit else off], dtype=np.float32),
            "scores": np.asarray([0.5], dtype=np.float32),  # every detection ties
            "labels": np.asarray([0]),
            "gt_boxes": np.asarray([box], dtype=np.float32),
            "gt_labels": np.asarray([0]),
        }

    records = [image(f"k{i:02d}", hit=i % 3 == 0) for i in range(12)]
    spec = SPECS["det"]
    task = get_task_type("detection")
    results = []
    for order in (records, records[::-1], records[6:] + records[:6]):
        states = [order[:5], order[5:]]  # two 'ranks' holding different, unordered parts
        results.append(task.new_metric(spec).compute(states))
    assert results[0] == results[1] == results[2]
    assert 0 < results[0]["map50"] < 1
