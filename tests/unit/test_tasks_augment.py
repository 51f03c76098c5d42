"""Train-time augmentation (albumentations): determined by the sample's rng alone, consistent."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from gppf_dist.tasks.augment import augment
from gppf_dist.tasks.base import Sample
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
    augment(np.zeros((32, 32, 3), np.uint8), rng)
    ref = np.random.default_rng(5)
    ref.integers(0, 2**63 - 1)
    assert rng.integers(0, 1 << 30) == ref.integers(0, 1 << 30)


def test_boxes_and_keypoints_follow_the_crop() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:30, 10:20] = 255
    for seed in range(10):
        aug = augment(
            image,
            np.random.default_rng(seed),
            boxes=np.array([[10, 20, 20, 30]], np.float32),
            keypoints=np.array([[15, 25]], np.float32),
        )
        x1, y1, x2, y2 = aug.boxes[0]
        assert image.dtype == aug.image.dtype and aug.boxes.shape == (1, 4)
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        assert aug.image[cy, cx].min() > 200  # the object is still under its box
        kx, ky = aug.keypoints[0]
        assert abs(kx - (x1 + x2) / 2) < 1 and abs(ky - (y1 + y2) / 2) < 1
