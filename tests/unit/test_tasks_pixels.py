"""The per-pixel kernels (`tasks/common/pixels.py`): bilinear resampling against a per-pixel
reference written out in float64, jitter's formulas, and OpenCV and torch agreeing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gppf_dist.tasks.common import pixels
from gppf_dist.tasks.common.pixels import _resize_from_pixel_corner
from gppf_dist.tasks.common.transforms import Geometry

BACKENDS = ("opencv", "torch")


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random, but with neighbours close, as in photographs: coarse noise, bilinearly enlarged."""
    coarse = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3))
    ys, xs = (np.arange(h) + 0.5) / 8, (np.arange(w) + 0.5) / 8
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return np.round(top * (1 - fy) + bottom * fy).astype(np.uint8)


def position_error(image: np.ndarray, backend: str, geo: Geometry) -> float:
    """OpenCV's warp rounds each sample position to 1/32 pixel: off by at most 1/64 pixel, so by
    at most 1/64 of the largest step between neighbours (the black outside one of them where the
    window leaves the image). torch samples at the exact position."""
    if backend == "torch":
        return 0.0
    values = image.astype(int)
    steps = [int(np.abs(np.diff(values, axis=axis)).max()) for axis in (0, 1)]
    h, w = image.shape[:2]
    if not (geo.x0 >= 0 and geo.y0 >= 0 and geo.x1 <= w and geo.y1 <= h):
        steps.append(int(values.max()))
    return max(steps) / 64


def _reference_bilinear(image: np.ndarray, geo: Geometry) -> np.ndarray:
    """Bilinear sampling written out per pixel in float64: centre of output pixel j maps to
    source x = x0 + (j + 0.5) / sx (mirrored under flip); neighbours at pixel centres; outside
    the image black, or the edge repeated when the window lies inside the image."""
    h, w = image.shape[:2]
    inside = geo.x0 >= 0 and geo.y0 >= 0 and geo.x1 <= w and geo.y1 <= h
    src = image.astype(np.float64)

    def pixel(y: int, x: int) -> np.ndarray:
        if inside:
            return src[min(max(y, 0), h - 1), min(max(x, 0), w - 1)]
        if 0 <= y < h and 0 <= x < w:
            return src[y, x]
        return np.zeros(3)

    out = np.zeros((geo.out_h, geo.out_w, 3))
    for i in range(geo.out_h):
        for j in range(geo.out_w):
            jj = geo.out_w - 1 - j if geo.flip else j
            x = geo.x0 + (jj + 0.5) / geo.sx - 0.5
            y = geo.y0 + (i + 0.5) / geo.sy - 0.5
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            fx, fy = x - x0, y - y0
            top = pixel(y0, x0) * (1 - fx) + pixel(y0, x0 + 1) * fx
            bottom = pixel(y0 + 1, x0) * (1 - fx) + pixel(y0 + 1, x0 + 1) * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize(
    "window,flip",
    [
        ((0.0, 0.0, 48.0, 40.0), False),  # the whole image, shrunk (the fast resize)
        ((2.0, 3.0, 20.5, 19.25), True),  # corner on the grid, fractional far edges, enlarged
        ((0.0, 0.0, 47.3, 39.9), False),  # a reduced decode's whole-image window
        ((3.3, 5.7, 20.2, 19.0), True),  # a fractional window inside, enlarged, flipped
        ((-6.5, -2.0, 40.0, 45.0), False),  # a person crop leaving the image
        ((20.5, 10.25, 30.0, 22.0), True),  # a small window well inside (the warp crops first)
        ((30.0, -12.0, 70.0, 8.0), False),  # leaving at the top right
        ((60.0, 50.0, 80.0, 70.0), False),  # missing the image: black
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_resample_matches_a_per_pixel_reference(
    backend: str, window: tuple[float, float, float, float], flip: bool
) -> None:
    rng = np.random.default_rng(1)
    for image in (rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), smooth_image(rng, 40, 48)):
        geo = Geometry(*window, 30, 26, flip)
        got = pixels.resample(image, geo, backend).astype(np.float64)
        want = _reference_bilinear(image, geo)
        assert got.shape == want.shape
        # rounding and fixed-point weights; OpenCV also rounds sample positions to 1/32 pixel
        error = position_error(image, backend, geo)
        assert np.abs(got - want).max() <= error + 1.0 + 1e-9
        assert np.abs(got - want).mean() < 0.4 + error / 2
    if backend == "torch":  # which windows take the uint8 resize (the rest, grid_sample)
        on_grid = window[0] == int(window[0]) and window[1] == int(window[1]) and window[0] >= 0
        fast = _resize_from_pixel_corner(image, geo)
        assert (fast is not None) == (on_grid and window[2] <= 48 and window[3] <= 40)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jitter_is_identity_at_one_and_moves_towards_grey(backend: str) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(pixels.jitter(image, 1.0, 1.0, 1.0, backend), image)
    grey = pixels.jitter(image, 1.0, 1.0, 0.0, backend).astype(int)
    assert np.abs(grey - grey[..., :1]).max() <= 1  # saturation 0: every channel the same
    flat = pixels.jitter(image, 1.0, 0.0, 1.0, backend).astype(int)
    assert flat.max() - flat.min() <= 1  # contrast 0: the mean grey everywhere
    brighter = pixels.jitter(image, 1.1, 1.0, 1.0, backend).astype(int)
    want = np.clip(np.floor(image.astype(np.float64) * 1.1 + 0.5), 0, 255)
    assert np.abs(brighter - want).max() <= 1


def test_the_backends_agree_on_photograph_like_images() -> None:
    """A run resumed on the other backend continues with images that differ by a level or two:
    the same sampling points (to OpenCV's 1/32 pixel) and the same formulas."""
    rng = np.random.default_rng(3)
    image = smooth_image(rng, 90, 120)
    for seed in range(20):
        draw = np.random.default_rng(seed)
        x0, y0 = draw.uniform(-10, 40, 2)
        side = draw.uniform(20, 80)
        geo = Geometry(x0, y0, x0 + side * 1.3, y0 + side, 48, 40, bool(seed % 2))
        a, b = (pixels.resample(image, geo, k).astype(int) for k in BACKENDS)
        assert np.abs(a - b).max() <= 2.0 + position_error(image, "opencv", geo), geo
        factors = draw.uniform(0.9, 1.1, 3)
        a, b = (pixels.jitter(image, *factors, backend=k).astype(int) for k in BACKENDS)
        assert np.abs(a - b).max() <= 1, factors


def test_without_opencv_the_torch_path_is_taken() -> None:
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "from gppf_dist.tasks.common import pixels\n"
        "print(pixels.BACKEND)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch"
    assert pixels.BACKEND == "opencv"  # the package depends on it: every install takes it
