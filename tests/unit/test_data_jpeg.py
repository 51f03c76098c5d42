"""libjpeg-turbo decoding, reduced in the DCT domain where the task's window allows.

How the results are pinned against the Pillow path (the decode before libjpeg-turbo):
- at full size the two decoders give the same pixels (at most 1 level apart, for rounding);
- the bilinear warp of a turbo image maps points exactly as Pillow's warp does (a gradient
  image warps to within 1 level, flips and padded windows included);
- a whole decode + prepare from a reduced decode stays within 30 dB PSNR of Pillow's (the two
  downscaling filters differ: the DCT's and Pillow's antialiasing bilinear), while boxes,
  keypoints and every augmentation draw are identical: they come from the annotation and the
  sample's RNG, never from the pixels. Runs compared for world-size invariance or resume use one
  decoder throughout, so those exactness tests are unaffected.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gppf_dist.bench.decode import TASKS, jpeg_bytes, make_samples, photo_like
from gppf_dist.data.decode.jpeg import allowed_eighths, check_decoder
from gppf_dist.data.decode.sample import RawSample, SampleError, decode_sample
from gppf_dist.data.load.pipeline import reduction_for
from gppf_dist.tasks.common.transforms import Geometry, warp_array, warp_bilinear
from gppf_dist.tasks.registry import get_task_type, make_spec


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-9))


def test_full_size_decode_equals_pillow() -> None:
    for raw in make_samples(TASKS["classification"], 3):
        turbo = decode_sample(raw, decoder="turbo")
        pillow = decode_sample(raw, decoder="pillow")
        assert (turbo.decoded_by, pillow.decoded_by) == ("turbo", "pillow")
        assert turbo.image.shape == pillow.image.shape == (375, 500, 3)
        assert turbo.image.flags.writeable
        diff = np.abs(turbo.image.astype(int) - pillow.image.astype(int))
        assert diff.max() <= 1


@pytest.mark.parametrize(
    ("window", "out_hw", "eighths"),
    [
        ((500, 375), (224, 224), 5),  # 313 x 235 px decoded for 224 x 224
        ((500, 375), (64, 64), 2),  # 1/8 would leave 47 rows
        ((500, 375), (640, 640), 8),  # upsampled: full size
        ((187.5, 250), (256, 192), 8),  # a pose window the size of the input
        ((1000, 800), (256, 192), 3),
    ],
)
def test_the_decode_scale_keeps_the_input_size_across_the_window(
    window: tuple[float, float], out_hw: tuple[int, int], eighths: int
) -> None:
    assert allowed_eighths(window, out_hw) == eighths
    w, h = window
    if eighths < 8:  # reduced: still as many pixels as the input, one eighth less would not be
        assert w * eighths / 8 >= out_hw[1] and h * eighths / 8 >= out_hw[0]
        assert w * (eighths - 1) / 8 < out_hw[1] or h * (eighths - 1) / 8 < out_hw[0]


@pytest.mark.parametrize(
    "geo",
    [
        Geometry(0, 0, 500, 375, 224, 224, False),
        Geometry(0, 0, 500, 375, 224, 224, True),
        Geometry(-10.5, -8.25, 150.7, 200.2, 192, 256, True),  # leaves the image: padded
        Geometry(10.3, 5.5, 400, 300, 300, 250, False),
    ],
)
def test_bilinear_warp_maps_points_as_the_pillow_warp(geo: Geometry) -> None:
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    image = np.stack([xx * 0.4 + 20, yy * 0.5 + 20, (xx + yy) * 0.1 + 60], -1).astype(np.uint8)
    diff = np.abs(warp_array(image, geo).astype(int) - warp_bilinear(image, geo).astype(int))
    assert diff.max() <= 1


@pytest.mark.parametrize("name", ["classification", "detection", "pose", "face"])
def test_reduced_decode_keeps_targets_and_rng_and_stays_close(name: str) -> None:
    task = TASKS[name]
    spec = make_spec("t", task.type, task.input_size, task.label_space)
    task_type = get_task_type(task.type)
    scales = set()
    for train in (False, True):
        for i, raw in enumerate(make_samples(task, 4, seed=7)):
            ours = decode_sample(raw, decoder="turbo", reduce=reduction_for(task_type, spec))
            pillow = decode_sample(raw, decoder="pillow")
            scales.add(ours.scale_eighths)
            a, ta = task_type.prepare(ours, spec, train, np.random.default_rng(i))
            b, tb = task_type.prepare(pillow, spec, train, np.random.default_rng(i))
            assert a.shape == b.shape == (3, *spec.input_size)
            for key in ("boxes", "labels", "keypoints", "box"):
                if isinstance(ta, dict) and key in ta:
                    assert torch.equal(ta[key], tb[key]), key  # same geometry, same draws
            assert ours.dropped == pillow.dropped
            assert _psnr(a, b) > 30, (name, train, i)
    if name in ("classification", "face"):
        assert max(scales) < 8  # the whole image is larger than the input: decoded reduced


def test_non_turbo_images_fall_back_to_pillow() -> None:
    rgb = photo_like(np.random.default_rng(0), 64, 48)
    ann = json.dumps({"label": 0}).encode()
    for mode, fmt in (("CMYK", "JPEG"), ("RGB", "PNG")):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, format=fmt)
        sample = decode_sample(RawSample("k", {"jpg": buf.getvalue(), "json": ann}))
        assert sample.decoded_by == "pillow" and sample.image.shape == (48, 64, 3)
    broken = jpeg_bytes(rgb)[:200]
    for decoder in ("turbo", "pillow"):
        with pytest.raises(SampleError) as err:
            decode_sample(RawSample("k", {"jpg": broken, "json": ann}), decoder=decoder)
        assert err.value.reason == "decode" and "'k'" in str(err.value)


def test_unknown_decoder_is_named() -> None:
    assert check_decoder("pillow") == "pillow"
    with pytest.raises(ValueError, match=r"`GPPF_DECODER`='fast' is not a decoder"):
        check_decoder("fast", "GPPF_DECODER")
