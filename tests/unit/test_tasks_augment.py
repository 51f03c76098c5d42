"""Train-time augmentation: determined by the sample's rng alone, consistent with the targets."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from gppf_dist.tasks.base import Sample
from gppf_dist.tasks.common.augment import JITTER, plan_augment, warp_for
from gppf_dist.tasks.common.transforms import plan_geometry
from gppf_dist.tasks.demo import demo_specs
from gppf_dist.tasks.registry import get_task_type

SPECS = demo_specs()


def sample_for(type_name: str) -> Sample:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    ann: dict[str, object] = {"width": 100, "height": 80}
    spec = next(s for s in SPECS.values() if s.type == type_name)
    mask = None
    if type_name in ("classification", "reid", "face"):
        ann.update(label=1, identity=1, camera=0)
    elif type_name == "attributes":
        ann["attributes"] = [1, 0, 1, 0]
    elif type_name == "detection":
        ann.update(boxes=[[10, 10, 50, 40], [60, 20, 90, 70]], labels=[0, 2])
    elif type_name == "segmentation":
        mask = rng.integers(0, spec.num_classes, (80, 100), dtype=np.uint8)
    elif type_name == "pose":
        kps = [[30 + 5 * i, 20 + 4 * i, 2] for i in range(spec.num_keypoints)]
        ann.update(keypoints=kps, box=[20, 10, 80, 70])
    return Sample(key=f"{type_name}0", image=image, ann=ann, mask=mask)


def flat(target: object) -> list[torch.Tensor]:
    if isinstance(target, torch.Tensor):
        return [target]
    if isinstance(target, dict):
        return [t for v in target.values() for t in flat(v)]
    return []


TYPES = ["classification", "attributes", "detection", "segmentation", "pose", "reid", "face"]


@pytest.mark.parametrize("type_name", TYPES)
def test_rng_alone_determines_the_augmentation(type_name: str) -> None:
    task = get_task_type(type_name)
    spec = next(s for s in SPECS.values() if s.type == type_name)
    sample = sample_for(type_name)
    np_state, py_state = np.random.get_state(), random.getstate()

    def run(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        np.random.seed(seed + 1000)  # the global RNGs must not matter
        random.seed(seed + 2000)
        image, target = task.prepare(sample, spec, True, np.random.default_rng(seed))
        return image, flat(target)

    try:
        a, b, c = run(3), run(3), run(4)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1], strict=True))
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, *spec.input_size) and a[0].dtype == torch.uint8


def test_augment_draws_one_value_from_rng() -> None:
    rng = np.random.default_rng(5)
    plan_augment(plan_geometry(32, 32, (32, 32)), rng)
    ref = np.random.default_rng(5)
    ref.integers(0, 2**63 - 1)
    assert rng.integers(0, 1 << 30) == ref.integers(0, 1 << 30)


def test_the_crop_stays_inside_the_frame_and_keeps_its_aspect() -> None:
    geo = plan_geometry(200, 100, (50, 80), window=(10.0, 5.0, 170.0, 105.0))
    flips, sides = 0, []
    for seed in range(300):
        aug, jitter = plan_augment(geo, np.random.default_rng(seed), min_scale=0.8)
        assert geo.x0 - 1e-9 <= aug.x0 < aug.x1 <= geo.x1 + 1e-9
        assert geo.y0 - 1e-9 <= aug.y0 < aug.y1 <= geo.y1 + 1e-9
        side = (aug.x1 - aug.x0) / (geo.x1 - geo.x0)
        assert side == pytest.approx((aug.y1 - aug.y0) / (geo.y1 - geo.y0))
        assert (aug.out_w, aug.out_h) == (geo.out_w, geo.out_h)
        for factor in (jitter.brightness, jitter.contrast, jitter.saturation):
            assert 1 - JITTER <= factor <= 1 + JITTER
        flips += aug.flip
        sides.append(side)
    assert 0.8 <= min(sides) < 0.82 and 0.99 < max(sides) <= 1.0
    assert 100 < flips < 200
    with pytest.raises(ValueError, match="min_scale=0"):
        plan_augment(geo, np.random.default_rng(0), min_scale=0.0)


@pytest.mark.parametrize("flip", [False, True])
def test_boxes_and_keypoints_follow_the_image(flip: bool) -> None:
    """A bright square under a box in the source: after the warp the box still frames it, for
    each random crop, flipped or not, whichever warp path the decode picks."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[40:70, 50:90] = 255
    box = np.array([[50, 40, 90, 70]], np.float32)
    sample = Sample(key="s", image=image, ann={"width": 160, "height": 120})
    seen_flip = False
    for seed in range(40):
        for decoded_by in ("turbo", "pillow"):
            sample.decoded_by = decoded_by
            warped = warp_for(sample, plan_geometry(160, 120, (64, 96)), True, rng_for(seed))
            if warped.geo.flip != flip:
                continue
            seen_flip = True
            x1, y1, x2, y2 = warped.geo.boxes(box)[0]
            assert x1 < x2 and y1 < y2
            bright = warped.image.min(2) > 128
            ys, xs = np.nonzero(bright)
            # the lit pixels' centres lie inside the box, and the box is filled by them
            assert xs.min() + 0.5 >= x1 - 1 and xs.max() + 0.5 <= x2 + 1
            assert ys.min() + 0.5 >= y1 - 1 and ys.max() + 0.5 <= y2 + 1
            assert bright[int(y1) + 2 : int(y2) - 1, int(x1) + 2 : int(x2) - 1].all()
            kx, ky = warped.geo.points(np.array([[70.0, 55.0]], np.float32))[0]
            assert abs(kx - (x1 + x2) / 2) < 1e-3 and abs(ky - (y1 + y2) / 2) < 1e-3
    assert seen_flip


def rng_for(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
