"""The two per-pixel kernels of training-input preparation, each in OpenCV and in torch.

- `resample`: bilinear sampling of an axis-aligned window (`Geometry`) at the output pixel
  centres; outside the image black where the window leaves it, the edge pixel repeated where it
  does not (as Pillow's resize does).
- `jitter`: brightness, contrast and saturation factors, as one linear map per pixel.

OpenCV is a dependency of the package and the path every install takes: its SIMD kernels keep
decode + augmentation at a few CPU cores per GPU. The torch path is for environments installed
without it (the GPU check's offline wheel set leaves OpenCV's 61 MiB wheel out). It samples the
same points with the same formulas (OpenCV rounds positions to 1/32 pixel, torch does not), so
on photographs the two differ by a level or two of 255 (`tests/unit/test_tasks_pixels.py`);
they are not bit-identical: `BACKEND` is logged by every worker, and a run is bit-exact across
a resume only on the same backend.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from gppf_dist.tasks.common.transforms import Geometry

try:
    import cv2
except ImportError:  # the torch path below
    cv2 = None

BACKEND = "opencv" if cv2 is not None else "torch"
"""Which implementation `resample` and `jitter` use in this process."""
GRAY = (0.299, 0.587, 0.114)
"""Luma weights (RGB) of the grey image that contrast and saturation blend towards."""
GRID_TOLERANCE = 1e-6
"""A window corner this close to a whole pixel counts as on it (a decode scale's round trip is
not exact in floating point)."""


def _inside(image: np.ndarray, geo: Geometry) -> bool:
    h, w = image.shape[:2]
    return geo.x0 >= 0 and geo.y0 >= 0 and geo.x1 <= w and geo.y1 <= h


def resample(image: np.ndarray, geo: Geometry, backend: str = BACKEND) -> np.ndarray:
    """HxWx3 uint8 → out_h x out_w x 3 uint8, bilinear, `geo` in this image's pixels."""
    if backend == "opencv":
        return _resample_cv2(image, geo)
    fast = _resize_from_pixel_corner(image, geo)
    return fast if fast is not None else _sample_grid(image, geo, _inside(image, geo))


def jitter(
    image: np.ndarray, brightness: float, contrast: float, saturation: float, backend: str = BACKEND
) -> np.ndarray:
    """HxWx3 uint8 → HxWx3 uint8. Brightness scales; contrast blends towards the mean grey of
    the brightened image; saturation blends each pixel towards its grey; no clipping between
    them. All three are linear: `c·b·(s·x + (1-s)·g) + (1-c)·b·mean(g)`, g the pixel's grey."""
    b, c, s = brightness, contrast, saturation
    if backend == "opencv":
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        offset = (1.0 - c) * b * float(cv2.mean(gray)[0])
        gray3 = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        return cv2.addWeighted(image, c * b * s, gray3, c * b * (1.0 - s), offset)
    x = image.astype(np.float32)
    g = x @ np.asarray(GRAY, np.float32)
    out = x * np.float32(c * b * s)
    out += (g * np.float32(c * b * (1.0 - s)))[..., None]
    out += np.float32((1.0 - c) * b * float(g.mean()) + 0.5)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def _resample_cv2(image: np.ndarray, geo: Geometry) -> np.ndarray:
    ax, ay = 1.0 / geo.sx, 1.0 / geo.sy
    bx = geo.x0 + (geo.out_w - 0.5 if geo.flip else 0.5) * ax - 0.5
    inverse = np.array([[-ax if geo.flip else ax, 0.0, bx], [0.0, ay, geo.y0 + 0.5 * ay - 0.5]])
    return cv2.warpAffine(
        image,
        inverse,
        (geo.out_w, geo.out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE if _inside(image, geo) else cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def _sample_grid(image: np.ndarray, geo: Geometry, inside: bool) -> np.ndarray:
    """`resample` through `grid_sample`: any window, fractional or leaving the image."""
    h, w = image.shape[:2]
    # only the pixels the samples can reach (one of margin), clipped to the image: where the
    # clip cuts, the crop's edge is the image's, so both padding modes stay right
    cx0, cy0 = max(math.floor(geo.x0) - 1, 0), max(math.floor(geo.y0) - 1, 0)
    cx1, cy1 = min(math.ceil(geo.x1) + 1, w), min(math.ceil(geo.y1) + 1, h)
    if cx0 >= cx1 or cy0 >= cy1:  # the window misses the image
        return np.zeros((geo.out_h, geo.out_w, 3), np.uint8)
    xs = geo.x0 - cx0 + (np.arange(geo.out_w, dtype=np.float64) + 0.5) / geo.sx
    if geo.flip:
        xs = xs[::-1]
    ys = geo.y0 - cy0 + (np.arange(geo.out_h, dtype=np.float64) + 0.5) / geo.sy
    grid = torch.empty(1, geo.out_h, geo.out_w, 2)
    grid[..., 0] = torch.from_numpy(xs * (2.0 / (cx1 - cx0)) - 1.0)  # pixel edges at -1, +1
    grid[..., 1] = torch.from_numpy(ys * (2.0 / (cy1 - cy0)) - 1.0)[:, None]
    src = torch.from_numpy(image[cy0:cy1, cx0:cx1]).permute(2, 0, 1)[None].float()
    out = F.grid_sample(src, grid, "bilinear", "border" if inside else "zeros", align_corners=False)
    return out[0].permute(1, 2, 0).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def _resize_from_pixel_corner(image: np.ndarray, geo: Geometry) -> np.ndarray | None:
    """The torch `resample` for a window inside the image whose top-left corner is a pixel
    corner: torch's uint8 bilinear resize of the crop from that corner at the window's exact
    scale (given, not recomputed from sizes, so the far edges may be fractional) samples the
    same points, faster than `grid_sample`. Where it enlarges, the first outputs' samples fall
    left of (above) the corner, which the crop clamps: those few columns (rows) are sampled
    again through the grid, unless the corner is the image's edge, where clamping is right.
    None where the window is not of this kind."""
    h, w = image.shape[:2]
    ix0, iy0 = round(geo.x0), round(geo.y0)
    off_grid = abs(geo.x0 - ix0) > GRID_TOLERANCE or abs(geo.y0 - iy0) > GRID_TOLERANCE
    if off_grid or not (ix0 >= 0 and iy0 >= 0 and geo.x1 <= w and geo.y1 <= h):
        return None
    ix1, iy1 = min(math.ceil(geo.x1) + 1, w), min(math.ceil(geo.y1) + 1, h)
    crop = torch.from_numpy(image[iy0:iy1, ix0:ix1]).permute(2, 0, 1)[None]
    out = F.interpolate(
        crop,
        scale_factor=(geo.sy, geo.sx),
        mode="bilinear",
        align_corners=False,
        recompute_scale_factor=False,
    )[0, :, : geo.out_h, : geo.out_w]
    if out.shape[1:] != (geo.out_h, geo.out_w):  # the scale rounded the size down: off the path
        return None
    if geo.flip:
        out = out.flip(-1)
    result = np.ascontiguousarray(out.permute(1, 2, 0).numpy())
    # the outputs whose sample lies before the corner: (j + 0.5) / s - 0.5 < 0
    cols = math.ceil((geo.sx - 1.0) / 2.0 - 1e-9) if ix0 > 0 else 0
    rows = math.ceil((geo.sy - 1.0) / 2.0 - 1e-9) if iy0 > 0 else 0
    if cols > 0:
        strip = replace(geo, x1=geo.x0 + cols / geo.sx, out_w=cols, flip=False)
        edge = _sample_grid(image, strip, True)
        if geo.flip:
            result[:, geo.out_w - cols :] = edge[:, ::-1]
        else:
            result[:, :cols] = edge
    if rows > 0:
        strip = replace(geo, y1=geo.y0 + rows / geo.sy, out_h=rows)
        result[:rows] = _sample_grid(image, strip, True)
    return result
