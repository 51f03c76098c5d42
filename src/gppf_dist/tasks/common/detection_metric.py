"""COCO box mAP through pycocotools' `COCOeval`: mAP@0.5 (`map50`) and mAP@[.5:.95] (`map`).

Per-image records (detections and ground truth, in input pixels) are collected on every rank and
merged; `mean_average_precision` then orders them by sample key, builds an in-memory COCO ground
truth (image ids 1..n in key order, category ids = class + 1) and results, and runs the standard
evaluate / accumulate / summarize. Ordering by key makes the result independent of how the
evaluation was split over ranks: COCOeval breaks score ties by image order, so concatenating the
ranks' records in rank order would otherwise make tied detections — frequent early in training,
when many scores sit at the prior — count in a split-dependent order. Upstream, decoding and NMS
sort with stable sorts, so tied candidates of one image keep location order on any machine.

Classes without ground truth are left out of the mean (COCOeval's -1 entries); an evaluation
without any ground truth gives NaN, one without detections 0.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _coco_inputs(
    images: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """(ground-truth dataset, result list, category ids with ground truth)."""
    gt_images, annotations, results = [], [], []
    for image_id, im in enumerate(images, start=1):
        gt_images.append({"id": image_id})
        for box, label in zip(_xywh(im["gt_boxes"]), im["gt_labels"], strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        for box, score, label in zip(_xywh(im["boxes"]), im["scores"], im["labels"], strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    classes = sorted({a["category_id"] for a in annotations})
    all_classes = sorted(classes + [r["category_id"] for r in results])
    categories = [{"id": c} for c in sorted(set(all_classes))]
    dataset = {"images": gt_images, "annotations": annotations, "categories": categories}
    return dataset, results, classes


def mean_average_precision(images: list[dict[str, Any]]) -> dict[str, float]:
    """`images`: per image boxes/scores/labels (detections, xyxy) and gt_boxes/gt_labels, and
    optionally `key` (records are evaluated in key order, see the module docstring)."""
    if any("key" in im for im in images):
        images = sorted(images, key=lambda im: str(im.get("key", "")))
    dataset, results, classes = _coco_inputs(images)
    if not classes:
        return {"map50": float("nan"), "map": float("nan")}
    if not results:
        return {"map50": 0.0, "map": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.imgIds = [im["id"] for im in dataset["images"]]
        evaluator.params.catIds = classes
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": float(evaluator.stats[0]), "map50": float(evaluator.stats[1])}
