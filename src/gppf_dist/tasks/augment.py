"""Train-time augmentation through albumentations, seeded from the sample's `rng` only.

`augment` applies, to an image already warped to the task's input size (and to its mask, boxes
and keypoints, which albumentations keeps consistent with it):
- `RandomResizedCrop` back to the same size: a window of side fraction in [`min_scale`, 1]
  (area fraction squared) with the input's aspect ratio, at a random position;
- `HorizontalFlip` with p = 0.5 (callers swap `left_*`/`right_*` keypoint names when `flipped`);
- `ColorJitter`: brightness, contrast and saturation within ±`JITTER` (hue unchanged).

Coordinates are continuous (pixel edges at integers, as in `transforms.Geometry`), which is how
albumentations crops and scales points; its point flip uses pixel indices (`w - 1 - x`), so
flipped points are shifted back by one pixel to `w - x`. Boxes travel as their two corners (the
transforms are axis-aligned, so corners map exactly) and come back unclipped, one per input box:
albumentations' own box processor rejects a whole call when a box degenerates, and callers must
drop such a box, not lose the sample (`DetectionTask` clips, drops and counts them).

Determinism: exactly one value is drawn from `rng` per call (a 63-bit seed); the pipeline's
numpy and Python generators are fresh ones seeded from it on every call
(`Compose.set_random_state`, which albumentations 2.x propagates to every transform), so the
global RNGs are never used and the sample's `rng` fully determines the augmentation. The
compiled pipelines are cached per input size and scale; re-seeding mutates them, so one process
must not augment from several threads at once (the data layer uses processes).
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass
from typing import Any

# albumentations asks PyPI for a newer version at import: nothing may reach the network at run
# time (offline clusters wait for the timeout, and it warns in every worker).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2
import numpy as np

MIN_SCALE = 0.8
"""Smallest side fraction of the train-time random crop window."""
JITTER = 0.1
"""Brightness / contrast / saturation jitter (relative)."""


@dataclass
class Augmented:
    image: np.ndarray
    """HxWx3 uint8."""
    mask: np.ndarray | None
    boxes: np.ndarray
    """[M, 4] xyxy: every input box, same order, mapped but not clipped (may be degenerate or
    outside the image now; x1 <= x2 kept under flip)."""
    keypoints: np.ndarray
    """[K, 2] all input keypoints, same order (possibly outside the image now)."""
    flipped: bool


_PER_THREAD = threading.local()


def _pipeline(height: int, width: int, min_scale: float, with_points: bool) -> A.Compose:
    """This thread's compiled pipeline for the key. `augment` sets a pipeline's random state
    before each call, so two threads (the prefetch thread and an evaluation) must never share
    one: each thread has its own."""
    cache: dict[tuple[int, int, float, bool], A.Compose] = _PER_THREAD.__dict__.setdefault(
        "pipelines", {}
    )
    key = (height, width, min_scale, with_points)
    if key not in cache:
        if len(cache) >= 64:
            cache.pop(next(iter(cache)))
        cache[key] = _build_pipeline(*key)
    return cache[key]


def _build_pipeline(height: int, width: int, min_scale: float, with_points: bool) -> A.Compose:
    """The compiled pipeline; a keypoint processor only where the caller has points (or boxes)."""
    aspect = width / height
    keypoint_params = None
    if with_points:
        keypoint_params = A.KeypointParams(
            format="xy",
            label_fields=["point_ids"],
            remove_invisible=False,
            check_each_transform=False,
        )
    return A.Compose(
        [
            A.RandomResizedCrop(
                size=(height, width),
                scale=(min_scale**2, 1.0),
                ratio=(aspect, aspect),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            ),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER, hue=0.0, p=1.0),
        ],
        keypoint_params=keypoint_params,
        save_applied_params=True,
    )


def augment(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    min_scale: float = MIN_SCALE,
    mask: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
) -> Augmented:
    """Random crop + flip + colour jitter of `image` (HxWx3 uint8) and its targets."""
    seed = int(rng.integers(0, 2**63 - 1))
    h, w = image.shape[:2]
    num_boxes = 0 if boxes is None else len(np.asarray(boxes).reshape(-1, 4))
    with_points = boxes is not None or keypoints is not None
    pipe = _pipeline(h, w, float(min_scale), with_points)
    # one numpy and one Python generator per call, shared by all transforms (cheaper than
    # `set_random_seed`, which builds a pair per transform)
    pipe.set_random_state(np.random.default_rng(seed), random.Random(seed))
    inputs: dict[str, Any] = {"image": image}
    # points first, then each box's corners (x1, y1) and (x2, y2)
    corners = np.zeros((0, 2), np.float32)
    if boxes is not None:
        corners = np.asarray(boxes, np.float32).reshape(-1, 2)
    points = np.zeros((0, 2), np.float32)
    if keypoints is not None:
        points = np.asarray(keypoints, np.float32).reshape(-1, 2)
    all_points = np.concatenate([points, corners])
    if with_points:
        inputs.update(keypoints=all_points, point_ids=np.arange(len(all_points)))
    if mask is not None:
        inputs["mask"] = mask
    out = pipe(**inputs)
    mapped = all_points
    if with_points:
        order = np.argsort(np.asarray(out["point_ids"], dtype=np.int64), kind="stable")
        mapped = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2)[order]
    if len(mapped) != len(all_points):
        raise RuntimeError("albumentations dropped keypoints despite remove_invisible=False")
    flipped = any(name == "HorizontalFlip" for name, _ in out["applied_transforms"])
    if flipped:  # albumentations flips points as pixel indices (w - 1 - x); ours are continuous
        mapped[:, 0] += 1.0
    ends = mapped[len(points) :].reshape(num_boxes, 2, 2)
    return Augmented(
        image=np.ascontiguousarray(out["image"]),
        mask=out.get("mask"),
        boxes=np.concatenate([ends.min(1), ends.max(1)], axis=1).astype(np.float32),
        keypoints=mapped[: len(points)],
        flipped=flipped,
    )
