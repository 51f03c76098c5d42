"""Task-type `prepare`: geometry stays consistent under flip/crop; bad annotations fail by key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gppf_dist.tasks.base import Sample
from gppf_dist.tasks.common.transforms import flip_permutation
from gppf_dist.tasks.demo import demo_specs
from gppf_dist.tasks.registry import TASK_TYPES, get_task_type, make_spec

SPECS = demo_specs()


def blank(h: int = 80, w: int = 120) -> np.ndarray:
    return np.zeros((h, w, 3), dtype=np.uint8)


def find_flip(prepare, want: bool, seed0: int = 0):  # noqa: ANN001, ANN201
    """Run `prepare(rng)` with seeds until the train-time flip is `want`; return its result."""
    for seed in range(seed0, seed0 + 50):
        img, target = prepare(np.random.default_rng(seed))
        flipped = (
            img[0, :, : img.shape[2] // 2].float().mean()
            < img[0, :, img.shape[2] // 2 :].float().mean()
        )
        if flipped == want:
            return img, target
    raise AssertionError("no seed gave the wanted flip")


def test_detection_box_follows_object_under_flip_and_crop() -> None:
    image = blank()
    image[20:50, 10:40] = 255  # a white object in the left part, also marks the flip
    sample = Sample(
        key="d0",
        image=image,
        ann={"width": 120, "height": 80, "boxes": [[10, 20, 40, 50]], "labels": [1]},
    )
    spec = SPECS["det"]
    for want in (False, True):
        img, target = find_flip(
            lambda r: get_task_type("detection").prepare(sample, spec, True, r), want
        )
        x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
        inside = img[0, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].float().mean()
        assert inside > 200, (want, target)
        assert img[0].float().mean() < 255 * (x2 - x1) * (y2 - y1) / img[0].numel() + 20


def test_segmentation_mask_follows_image_under_flip() -> None:
    image = blank()
    image[:, :30] = 255
    mask = np.zeros((80, 120), dtype=np.uint8)
    mask[:, :30] = 2
    mask[0, 0] = 255
    sample = Sample(key="s0", image=image, ann={"width": 120, "height": 80}, mask=mask)
    for want in (False, True):
        img, target = find_flip(
            lambda r: get_task_type("segmentation").prepare(sample, SPECS["seg"], True, r), want
        )
        m = target["mask"]
        assert m.shape == (64, 64) and m.dtype == torch.int64
        bright = img[0] > 128
        agree = (bright == (m == 2)) | (m == 255)
        assert agree.float().mean() > 0.95


def test_pose_keypoints_follow_image_and_swap_names_under_flip() -> None:
    names = ["nose", "left_eye", "right_eye"]
    spec = make_spec("p", "pose", (64, 48), {"keypoints": names, "skeleton": []})
    image = blank(100, 100)
    image[38:42, 28:32] = 255  # the left eye is a bright dot at (30, 40)
    kps = [[50, 30, 2], [30, 40, 2], [70, 40, 1]]
    sample = Sample(
        key="p0",
        image=image,
        ann={"width": 100, "height": 100, "keypoints": kps, "box": [20, 20, 80, 80]},
    )
    for want in (False, True):
        img, target = find_flip(
            lambda r: get_task_type("pose").prepare(sample, spec, True, r), want
        )
        # the bright dot is the old left eye; after a flip it is named right_eye (index 2)
        dot = target["keypoints"][2 if want else 1]
        x, y = int(dot[0]), int(dot[1])
        assert img[0, y - 1 : y + 2, x - 1 : x + 2].max() > 100, (want, dot)
        assert int(target["keypoints"][1][2]) == (1 if want else 2)


def test_flip_permutation() -> None:
    assert flip_permutation(["nose", "left_eye", "right_eye", "left_x"]) == [0, 2, 1, 3]


def test_eval_prepare_is_deterministic_resize() -> None:
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    sample = Sample(key="c", image=image, ann={"width": 70, "height": 50, "label": 3})
    a, ta = get_task_type("classification").prepare(
        sample, SPECS["cls_object"], False, np.random.default_rng(0)
    )
    b, _ = get_task_type("classification").prepare(
        sample, SPECS["cls_object"], False, np.random.default_rng(1)
    )
    assert a.shape == (3, 64, 64) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert int(ta["label"]) == 3


BAD = [
    ("classification", {"label": 10}, "label"),
    ("classification", {"label": "3"}, "label"),
    ("classification", {}, "label"),
    ("attributes", {"attributes": [0, 1]}, "attributes"),
    ("detection", {"boxes": [[0, 0, 500, 10]], "labels": [0]}, "boxes"),
    ("detection", {"boxes": [[0, 0, 5, 10]], "labels": [7]}, "labels"),
    ("detection", {"boxes": [[0, 0, 5, 10]], "labels": []}, "labels"),
    ("detection", {"boxes": [[0, 0, 5]], "labels": [0]}, "boxes"),
    ("detection", {"boxes": [[0, 0, 5, 6], [1, 2]], "labels": [0, 0]}, "boxes"),
    ("detection", {"boxes": [[0, 0, "a", 6]], "labels": [0]}, "boxes"),
    ("pose", {"keypoints": [[1, 1]] * 7, "box": [0, 0, 10, 10]}, "keypoints"),
    ("pose", {"keypoints": [[1, 1, 2]] * 7, "box": [0, 0, 10]}, "box"),
    ("pose", {"keypoints": [[1, 1, 2]], "box": [0, 0, 10, 10]}, "keypoints"),
    ("pose", {"keypoints": [[500, 1, 2]] * 7, "box": [0, 0, 10, 10]}, "keypoints"),
    ("pose", {"keypoints": [[1, 1, 2]] * 7, "box": [0, 0, 1000, 10]}, "box"),
    ("reid", {"identity": -1}, "identity"),
    ("face", {"identity": 99}, "identity"),
]


@pytest.mark.parametrize(("type_name", "ann", "key"), BAD)
def test_bad_annotation_names_key(type_name: str, ann: dict, key: str) -> None:
    spec = next(s for s in SPECS.values() if s.type == type_name)
    sample = Sample(key="bad-sample", image=blank(), ann={"width": 120, "height": 80, **ann})
    with pytest.raises(ValueError, match=rf"bad-sample.*`{key}"):
        get_task_type(type_name).prepare(sample, spec, True, np.random.default_rng(0))


def test_bad_mask_and_size_name_key() -> None:
    sample = Sample(
        key="m1",
        image=blank(),
        ann={"width": 120, "height": 80},
        mask=np.full((80, 120), 9, np.uint8),
    )
    with pytest.raises(ValueError, match="m1.*mask"):
        get_task_type("segmentation").prepare(sample, SPECS["seg"], True, np.random.default_rng(0))
    sample = Sample(key="m2", image=blank(), ann={"width": 121, "height": 80, "label": 0})
    with pytest.raises(ValueError, match="m2.*width"):
        get_task_type("classification").prepare(
            sample, SPECS["cls_object"], True, np.random.default_rng(0)
        )


def test_registry_and_make_spec() -> None:
    assert set(TASK_TYPES) == {
        "classification",
        "attributes",
        "detection",
        "segmentation",
        "pose",
        "reid",
        "face",
    }
    with pytest.raises(ValueError, match="known types"):
        get_task_type("captioning")
    spec = make_spec("r", "reid", (64, 32), {"num_identities": 5})
    assert spec.num_classes == 5 and spec.input_size == (64, 32)
    assert make_spec("a", "attributes", (8, 8), {"attributes": ["x", "y"]}).num_attributes == 2
    assert SPECS["pose"].num_keypoints == 7
    with pytest.raises(ValueError, match="label_space.classes"):
        make_spec("c", "classification", (64, 64), {})
    with pytest.raises(ValueError, match="num_identities"):
        make_spec("f", "face", (64, 64), {"num_identities": 0})


def test_detection_without_boxes_collates_and_has_a_loss() -> None:
    task, spec = get_task_type("detection"), SPECS["det"]
    empty = Sample(
        key="e", image=blank(), ann={"width": 120, "height": 80, "boxes": [], "labels": []}
    )
    one = Sample(
        key="o",
        image=blank(),
        ann={"width": 120, "height": 80, "boxes": [[5, 5, 60, 60]], "labels": [2]},
    )
    prepared = [task.prepare(s, spec, True, np.random.default_rng(0)) for s in (empty, one)]
    targets = task.collate([t for _, t in prepared])
    assert targets["boxes"].shape == (2, 1, 4) and targets["labels"].tolist()[0] == [-1]
    head = task.build_head([16, 32, 64, 128], [4, 8, 16, 32], spec)
    feats = [
        torch.randn(2, c, 96 // s, 96 // s)
        for c, s in zip([16, 32, 64, 128], [4, 8, 16, 32], strict=True)
    ]
    loss = task.loss(head(feats), targets, torch.zeros(2))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
