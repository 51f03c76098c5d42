"""COCO-style mean average precision in numpy: mAP@0.5 and mAP@[.5:.95].

Per class and IoU threshold, detections of all images are sorted by score; each is a true positive
if it overlaps a not-yet-matched ground-truth box of its image and class by at least the threshold
(the best-overlapping one is taken). AP is the 101-point interpolated area under the
precision/recall curve; classes without ground truth are left out of the mean.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    recall = ctp / num_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-9)
    # precision envelope (monotone non-increasing from the right)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    values = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(values.mean())


def mean_average_precision(
    images: list[dict[str, np.ndarray]], thresholds: np.ndarray = IOU_THRESHOLDS
) -> dict[str, float]:
    """`images`: per image dict with boxes/scores/labels (detections) and gt_boxes/gt_labels."""
    classes = sorted({int(c) for im in images for c in im["gt_labels"]})
    if not classes:
        return {"map50": float("nan"), "map": float("nan")}
    ap = np.zeros((len(thresholds), len(classes)))
    for ci, c in enumerate(classes):
        tps, scores, num_gt = [], [], 0
        for im in images:
            d, g = im["labels"] == c, im["gt_labels"] == c
            num_gt += int(g.sum())
            tp, sc = _match_image(im["boxes"][d], im["scores"][d], im["gt_boxes"][g], thresholds)
            tps.append(tp)
            scores.append(sc)
        all_tp, all_scores = np.concatenate(tps, axis=1), np.concatenate(scores)
        for ti in range(len(thresholds)):
            ap[ti, ci] = _average_precision(all_tp[ti], all_scores, num_gt)
    return {"map50": float(ap[0].mean()), "map": float(ap.mean())}


def _match_image(
    boxes: np.ndarray, scores: np.ndarray, gts: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in score order at every threshold at once: (tp [T, D], sorted scores)."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    tp = np.zeros((len(thresholds), len(boxes)), dtype=bool)
    if not len(boxes) or not len(gts):
        return tp, scores
    iou = _iou(boxes, gts)
    matched = np.zeros((len(thresholds), len(gts)), dtype=bool)
    rows = np.arange(len(thresholds))
    for k in range(len(boxes)):
        cand = np.where(matched, -1.0, iou[k][None, :])
        best = cand.argmax(axis=1)
        hit = cand[rows, best] >= thresholds
        tp[hit, k] = True
        matched[rows[hit], best[hit]] = True
    return tp, scores
