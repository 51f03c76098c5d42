"""Train-time augmentation, seeded from the sample's `rng` only, in plain numpy and Pillow.

`augment` applies, to an image already warped to the task's input size (and to its mask, boxes
and keypoints, mapped by the same `transforms.Geometry`, so they stay aligned with it):
- a random resized crop back to the same size: a window of side fraction `sqrt(a)`, `a` drawn
  uniformly in [`min_scale`², 1] (the area fraction), with the input's aspect ratio, at a
  uniformly random position inside the image; bilinear for the image, nearest for the mask;
- a horizontal flip with p = 0.5 (callers swap `left_*`/`right_*` keypoint names when
  `flipped`);
- colour jitter: brightness, contrast and saturation each by a factor drawn uniformly within
  1 ± `JITTER`, applied in a random order (hue unchanged), saturating at 0 and 255.

Coordinates are continuous (pixel edges at integers, as in `transforms.Geometry`): a point maps as
`x' = (x - x0) · w / cw`, then `w - x'` under the flip, exactly as the image's pixel centres do.
Boxes map corner by corner (the transforms are axis-aligned) and come back unclipped, one per
input box: callers drop a box that degenerates (`DetectionTask` clips, drops and counts them).

Determinism: exactly one value is drawn from `rng` per call (a 63-bit seed); every random choice
comes from a fresh generator seeded from it, so the global RNGs are never used and the sample's
`rng` alone determines the augmentation. Nothing is shared between calls: any thread may augment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gppf_dist.tasks.transforms import Geometry, warp_array, warp_mask

MIN_SCALE = 0.8
"""Smallest side fraction of the train-time random crop window."""
JITTER = 0.1
"""Brightness / contrast / saturation jitter (relative)."""
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
"""ITU-R 601 weights of the grey that contrast and saturation blend towards (Pillow's "L")."""


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


def random_crop_flip(
    width: int, height: int, min_scale: float, gen: np.random.Generator
) -> Geometry:
    """The crop window (the input's aspect ratio, inside the image) and the flip, as a
    `Geometry` back to `width` x `height`."""
    side = math.sqrt(gen.uniform(min_scale**2, 1.0))
    crop_w, crop_h = width * side, height * side
    x0 = gen.uniform(0.0, width - crop_w)
    y0 = gen.uniform(0.0, height - crop_h)
    flip = bool(gen.random() < 0.5)
    return Geometry(x0, y0, x0 + crop_w, y0 + crop_h, width, height, flip)


def jitter_colours(image: np.ndarray, gen: np.random.Generator, amount: float) -> np.ndarray:
    """Brightness, contrast and saturation by factors in 1 ± `amount`, in a random order."""
    factors = gen.uniform(1.0 - amount, 1.0 + amount, 3)
    out = image.astype(np.float32)
    for op in gen.permutation(3):
        f = np.float32(factors[op])
        if op == 0:  # brightness: towards black
            out = out * f
        elif op == 1:  # contrast: towards the image's mean grey
            mean = np.float32((out @ LUMA).mean())
            out = (out - mean) * f + mean
        else:  # saturation: towards each pixel's grey
            grey = (out @ LUMA)[..., None]
            out = (out - grey) * f + grey
        np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out).astype(np.uint8)


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
    gen = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
    h, w = image.shape[:2]
    geo = random_crop_flip(w, h, float(min_scale), gen)
    points = np.zeros((0, 2), np.float32)
    if keypoints is not None:
        points = geo.points(np.asarray(keypoints, np.float32).reshape(-1, 2))
    mapped_boxes = np.zeros((0, 4), np.float32)
    if boxes is not None:
        mapped_boxes = geo.boxes(np.asarray(boxes, np.float32).reshape(-1, 4))
    return Augmented(
        image=jitter_colours(warp_array(image, geo), gen, JITTER),
        mask=None if mask is None else warp_mask(mask, geo),
        boxes=mapped_boxes,
        keypoints=points,
        flipped=geo.flip,
    )
