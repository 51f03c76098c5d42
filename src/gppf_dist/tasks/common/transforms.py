"""Geometry shared by all task types: the deterministic window + resize to the task's input size.

A `Geometry` maps source pixels to the task's input: a window `(x0, y0, x1, y1)` of the source
image (continuous pixel-edge coordinates, may extend past the image for top-down pose crops,
padded with zeros) is resized to `out_w × out_h`, then optionally flipped. Points map as
`x' = (x - x0) · out_w / (x1 - x0)` (then `out_w - x'` if flipped), which is exactly how PIL's
resize with a box maps pixel centres, so boxes, masks and keypoints stay aligned with the image.

This is the whole of evaluation-time preprocessing. Training-time augmentation (random crop,
flip) is a different `Geometry` of the same kind (`gppf_dist.tasks.common.augment.plan_augment`), so
a training image is resampled once as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from gppf_dist.tasks.base import Sample, TaskSpec
from gppf_dist.tasks.common import pixels


@dataclass
class Geometry:
    x0: float
    y0: float
    x1: float
    y1: float
    out_w: int
    out_h: int
    flip: bool

    @property
    def sx(self) -> float:
        return self.out_w / (self.x1 - self.x0)

    @property
    def sy(self) -> float:
        return self.out_h / (self.y1 - self.y0)

    def points(self, xy: np.ndarray) -> np.ndarray:
        """[..., 2] source points → input points."""
        out = np.empty_like(xy, dtype=np.float32)
        out[..., 0] = (xy[..., 0] - self.x0) * self.sx
        out[..., 1] = (xy[..., 1] - self.y0) * self.sy
        if self.flip:
            out[..., 0] = self.out_w - out[..., 0]
        return out

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """[M, 4] xyxy source boxes → input boxes (x1 <= x2 kept under flip), unclipped."""
        out = np.empty((len(boxes), 4), dtype=np.float32)
        out[:, :2] = self.points(boxes[:, :2])
        out[:, 2:] = self.points(boxes[:, 2:])
        if self.flip:
            out[:, [0, 2]] = out[:, [2, 0]]
        return out

    def scaled(self, eighths: int) -> Geometry:
        """The same mapping read from an image decoded at `eighths`/8 of the source size."""
        f = eighths / 8
        return Geometry(
            self.x0 * f, self.y0 * f, self.x1 * f, self.y1 * f, self.out_w, self.out_h, self.flip
        )


def plan_geometry(
    src_w: int,
    src_h: int,
    out_hw: tuple[int, int],
    window: tuple[float, float, float, float] | None = None,
) -> Geometry:
    """Resize `window` (default: the whole image) to `out_hw` = (height, width), unflipped."""
    x0, y0, x1, y1 = window if window is not None else (0.0, 0.0, float(src_w), float(src_h))
    return Geometry(x0, y0, x1, y1, out_hw[1], out_hw[0], False)


def _warp(pil: Image.Image, geo: Geometry, resample: Image.Resampling) -> Image.Image:
    ix0, iy0 = math.floor(geo.x0), math.floor(geo.y0)
    ix1, iy1 = math.ceil(geo.x1), math.ceil(geo.y1)
    crop = pil.crop((ix0, iy0, ix1, iy1))  # zero-pads outside the image
    box = (geo.x0 - ix0, geo.y0 - iy0, geo.x1 - ix0, geo.y1 - iy0)
    out = crop.resize((geo.out_w, geo.out_h), resample, box=box)
    if geo.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def warp_array(image: np.ndarray, geo: Geometry) -> np.ndarray:
    """HxWx3 uint8 → out_h x out_w x 3 uint8 array."""
    return np.asarray(_warp(Image.fromarray(image), geo, Image.Resampling.BILINEAR))


def to_chw(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 array → 3xHxW uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


BILINEAR_MAX_DOWNSCALE = 2.0
"""A libjpeg-turbo image is warped with a plain bilinear filter when the warp shrinks it by at
most this much (the DCT did the rest of the downscaling); otherwise, and for Pillow-decoded
images, with Pillow's antialiasing resize."""


def warp_bilinear(image: np.ndarray, geo: Geometry) -> np.ndarray:
    """HxWx3 uint8 → out_h x out_w x 3 uint8 by bilinear sampling at the output pixel centres
    (the same point mapping as `warp_array`); outside the image is black where the window leaves
    it, the edge pixel repeated where it does not (as Pillow's resize does)."""
    return pixels.resample(image, geo)


def warp_sample(sample: Sample, geo: Geometry) -> np.ndarray:
    """`sample.image` warped by `geo` (planned in source pixels), whatever its decode scale."""
    if sample.scale_eighths != 8:
        geo = geo.scaled(sample.scale_eighths)
    shrink = max(1.0 / geo.sx, 1.0 / geo.sy)
    if sample.decoded_by == "turbo" and shrink <= BILINEAR_MAX_DOWNSCALE:
        return warp_bilinear(sample.image, geo)
    return warp_array(sample.image, geo)


def whole_image_window(
    ann: dict[str, Any], width: int, height: int, spec: TaskSpec
) -> tuple[float, float]:
    """`TaskType.source_window` of task types that resize the whole image."""
    return float(width), float(height)


def warp_image(image: np.ndarray, geo: Geometry) -> torch.Tensor:
    """HxWx3 uint8 → 3 x out_h x out_w uint8 tensor."""
    return to_chw(warp_array(image, geo))


def warp_mask(mask: np.ndarray, geo: Geometry, fill: int = 255) -> np.ndarray:
    """HxW uint8 class ids → out_h x out_w uint8 (nearest); outside the image = `fill`."""
    # Shift ids by one so that PIL's zero padding can be told apart and mapped to `fill`.
    shifted = mask.astype(np.int32) + 1
    pil = Image.fromarray(shifted.astype(np.int32))  # 32-bit integer mode "I"
    out = np.asarray(_warp(pil, geo, Image.Resampling.NEAREST)) - 1
    return np.where(out < 0, fill, out).astype(np.uint8)


def check_image(sample: Sample) -> tuple[int, int]:
    """Validate the image and the ann's width/height; returns the source's (width, height)."""
    img, ann = sample.image, sample.ann
    if not isinstance(ann, dict):
        raise ValueError(f"sample {sample.key!r}: `ann` must be a dict, got {type(ann).__name__}")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"sample {sample.key!r}: `image` must be HxWx3 uint8, got {img.shape} {img.dtype}"
        )
    h, w = img.shape[:2]
    if sample.scale_eighths != 8:
        assert sample.source_size is not None, "a reduced image carries its source size"
        w, h = sample.source_size
        m = sample.scale_eighths
        assert img.shape[:2] == (-(-h * m // 8), -(-w * m // 8)), (img.shape, (w, h), m)
    if ann.get("width", w) != w or ann.get("height", h) != h:
        raise ValueError(
            f"sample {sample.key!r}: `width`x`height`={ann.get('width')}x{ann.get('height')} "
            f"does not match the {w}x{h} image"
        )
    return w, h


def require(sample: Sample, key: str, kind: type | tuple[type, ...]) -> Any:
    """`sample.ann[key]`, checked to be an instance of `kind` (ValueError naming the key)."""
    if key not in sample.ann:
        raise ValueError(f"sample {sample.key!r}: annotation `{key}` is missing")
    value = sample.ann[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"sample {sample.key!r}: `{key}`={value!r} has the wrong type")
    return value


def require_array(sample: Sample, key: str, columns: int) -> np.ndarray:
    """`sample.ann[key]` as a float32 [n, columns] array (ValueError naming the key otherwise)."""
    value = require(sample, key, list)
    if not value:
        return np.zeros((0, columns), dtype=np.float32)
    try:
        array = np.asarray(value, dtype=np.float32).reshape(len(value), -1)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape[1:] != (columns,) or not np.isfinite(array).all():
        raise ValueError(
            f"sample {sample.key!r}: `{key}`={value!r} must be a list of {columns}-number rows"
        )
    return array


def require_int_in(sample: Sample, key: str, high: int | None) -> int:
    """An int annotation in [0, high) (or >= 0 when `high` is None)."""
    value = require(sample, key, (int, np.integer))
    if value < 0 or (high is not None and value >= high):
        bound = f"[0, {high})" if high is not None else ">= 0"
        raise ValueError(f"sample {sample.key!r}: `{key}`={value} is out of range {bound}")
    return int(value)


def flip_permutation(names: list[str]) -> list[int]:
    """Index permutation swapping `left_*` and `right_*` keypoints (identity for the others)."""
    index = {n: i for i, n in enumerate(names)}
    perm = list(range(len(names)))
    for i, n in enumerate(names):
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if n.startswith(a) and b + n[len(a) :] in index:
                perm[i] = index[b + n[len(a) :]]
    return perm
