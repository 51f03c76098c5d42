"""Train-time augmentation, planned as part of the warp and seeded from the sample's `rng` only.

`plan_augment` turns a task's deterministic `Geometry` (its window resized to the input size)
into the training geometry, so the image is resampled once, not warped and then cropped and
resized again:
- a random crop of that input frame, resized back to the same size: side fraction in
  [`min_scale`, 1] (area fraction uniform in [`min_scale`², 1]), the frame's aspect ratio, at a
  uniform random position; it becomes a smaller source window;
- a horizontal flip with p = 0.5 (`Geometry.flip`; pose swaps `left_*`/`right_*` names);
- colour jitter after the warp: brightness, contrast and saturation factors uniform in
  1 ± `JITTER`, applied in that order without intermediate clipping (hue unchanged;
  `pixels.jitter`).

Boxes, masks and keypoints map through the returned geometry exactly as at evaluation
(`Geometry.points`, `Geometry.boxes`, `warp_mask`): they stay aligned with the image by
construction, and boxes come back unclipped (callers clip, drop and count degenerate ones).

Determinism: exactly one value is drawn from `rng` per call (a 63-bit seed) and every draw
comes from a generator seeded from it, so the global RNGs are never used and the sample's `rng`
alone determines the augmentation. Nothing is cached or shared: threads may augment at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gppf_dist.tasks.base import Sample
from gppf_dist.tasks.common import pixels
from gppf_dist.tasks.common.transforms import Geometry, warp_sample

MIN_SCALE = 0.8
"""Smallest side fraction of the train-time random crop window."""
JITTER = 0.1
"""Brightness / contrast / saturation jitter (relative)."""


@dataclass(frozen=True)
class Jitter:
    brightness: float
    contrast: float
    saturation: float

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 → HxWx3 uint8 (`pixels.jitter`)."""
        return pixels.jitter(image, self.brightness, self.contrast, self.saturation)


def plan_augment(
    geo: Geometry, rng: np.random.Generator, *, min_scale: float = MIN_SCALE
) -> tuple[Geometry, Jitter]:
    """The training geometry (random crop of `geo`'s input frame, maybe flipped) and jitter."""
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"augment: min_scale={min_scale} must be in (0, 1]")
    if geo.flip:
        raise ValueError("augment: plan from an unflipped geometry")
    local = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
    side = float(np.sqrt(local.uniform(min_scale**2, 1.0)))
    cx0 = float(local.uniform(0.0, 1.0 - side)) * geo.out_w  # crop window in input pixels
    cy0 = float(local.uniform(0.0, 1.0 - side)) * geo.out_h
    flip = bool(local.integers(0, 2))
    b, c, s = (float(v) for v in local.uniform(1.0 - JITTER, 1.0 + JITTER, size=3))
    x0, y0 = geo.x0 + cx0 / geo.sx, geo.y0 + cy0 / geo.sy
    wide, tall = side * (geo.x1 - geo.x0), side * (geo.y1 - geo.y0)
    window = Geometry(x0, y0, x0 + wide, y0 + tall, geo.out_w, geo.out_h, flip)
    return window, Jitter(b, c, s)


@dataclass
class Warped:
    image: np.ndarray
    """out_h x out_w x 3 uint8."""
    geo: Geometry
    """What the image was warped by: map the sample's targets through it."""


def warp_for(
    sample: Sample,
    geo: Geometry,
    train: bool,
    rng: np.random.Generator,
    *,
    min_scale: float = MIN_SCALE,
) -> Warped:
    """`sample.image` warped by `geo`, or under training by `geo` augmented (then jittered)."""
    if not train:
        return Warped(warp_sample(sample, geo), geo)
    geo, jitter = plan_augment(geo, rng, min_scale=min_scale)
    return Warped(jitter(warp_sample(sample, geo)), geo)
