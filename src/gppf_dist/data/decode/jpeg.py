"""JPEG decoding through libjpeg-turbo (`simplejpeg`), optionally reduced in the DCT domain.

libjpeg-turbo can decode a JPEG at `m`/8 of its size (m = 1..8) by scaling the inverse DCT:
each 8×8 block becomes m×m pixels, so pixel `j` covers source pixels `[j·8/m, (j+1)·8/m)`,
continuous coordinates map as `x · m/8` and the reduced size is `ceil(w·m/8) × ceil(h·m/8)`.
The DCT does the downscaling (with less aliasing than a bilinear filter and much cheaper than
resampling the full image), leaving the warp to the task's input a small residual resize.

At full size (m = 8), with the accurate integer DCT and smooth chroma upsampling used here,
the result equals Pillow's (Pillow's JPEG plugin runs the same library with the same
settings); `tests/unit/test_data_jpeg.py` pins that, and how close a reduced decode + warp
comes to Pillow's full decode + warp. Anything this path cannot take (not a JPEG, CMYK/YCCK,
a decoder error) returns None, and the caller decodes with Pillow instead.

`GPPF_DECODER=pillow` (or `decoder="pillow"` where a decoder is chosen) forces the Pillow path
for every image, e.g. to compare against runs made before this decoder existed;
`GPPF_DECODER=gpu` decodes JPEGs on a CUDA device (`data.gpu_decode`).
"""

from __future__ import annotations

import os

import numpy as np
import simplejpeg

DECODERS = ("turbo", "pillow", "gpu")
"""`turbo`: JPEG through libjpeg-turbo with reduced decode where the task allows, Pillow for
everything else; `pillow`: Pillow at full size for every image; `gpu`: JPEG on a CUDA device at
full size (optional backends, `data.gpu_decode`), Pillow for everything else."""

DECODER_ENV = "GPPF_DECODER"
"""Environment variable choosing the decoder where none is chosen explicitly (default turbo)."""

FULL = 8
"""`scale_eighths` of a full-size decode."""

_DIRECT_COLORSPACES = frozenset({"YCbCr", "Gray"})
"""JPEG colour spaces libjpeg-turbo converts to RGB itself (CMYK/YCCK go to Pillow)."""


def check_decoder(name: str, where: str = "decoder") -> str:
    """`name` if it is a known decoder, else ValueError naming `where` and the choices."""
    if name not in DECODERS:
        raise ValueError(f"`{where}`={name!r} is not a decoder; choose one of {list(DECODERS)}")
    return name


def default_decoder() -> str:
    """The decoder used where none is chosen explicitly: `$GPPF_DECODER`, else turbo."""
    return check_decoder(os.environ.get(DECODER_ENV, "turbo"), DECODER_ENV)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG libjpeg-turbo can decode to RGB; None otherwise."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _DIRECT_COLORSPACES:
        return None
    return int(width), int(height)


def scaled_size(size: tuple[int, int], eighths: int) -> tuple[int, int]:
    """(width, height) of a `size` image decoded at `eighths`/8."""
    return -(-size[0] * eighths // FULL), -(-size[1] * eighths // FULL)


def decode_jpeg(
    data: bytes, size: tuple[int, int], eighths: int = FULL
) -> tuple[np.ndarray, int] | None:
    """(HxWx3 uint8 RGB, its scale in eighths): at `eighths`/8 of `size` = (width, height) as
    given by `jpeg_size` (at full size where a tiny image makes the factor ambiguous); None when
    libjpeg-turbo fails (the caller falls back to Pillow)."""
    assert 1 <= eighths <= FULL, eighths
    width, height = scaled_size(size, eighths)
    if eighths < FULL and scaled_size(size, eighths - 1) == (width, height):
        eighths, (width, height) = FULL, size  # tiny image: the factor would be ambiguous
    try:
        image = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            min_height=height,
            min_width=width,
            min_factor=FULL / eighths,  # with the bounds above, pins the factor to eighths/8
        )
    except ValueError:
        return None
    if image.shape != (height, width, 3):
        return None
    return image, eighths


def allowed_eighths(window: tuple[float, float], out_hw: tuple[int, int]) -> int:
    """The smallest decode scale m/8 that still leaves at least `out_hw` pixels across a source
    window of size `window` = (width, height): the warp to the input then downsizes by less than
    8/7 and never upsamples where the full image would not have. 8 (full size) when none does."""
    w, h = window
    out_h, out_w = out_hw
    for m in range(1, FULL):
        if w * m / FULL >= out_w and h * m / FULL >= out_h:
            return m
    return FULL
