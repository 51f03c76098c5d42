"""AI Challenger 2017 human keypoints (AIC): 14 keypoints per person in the release's own JSON.

The annotation file (`keypoint_train_annotations_20170909.json`,
`keypoint_validation_annotations_20170911.json`) is one JSON list, an entry per image:
`{"url": ..., "image_id": "<hex id>", "keypoint_annotations": {"human1": [x1, y1, v1, ...]},
"human_annotations": {"human1": [x1, y1, x2, y2]}}`, the image being `<image_id>.jpg` in the
images folder (`keypoint_train_images_20170902/`). AIC's visibility is 1 = visible,
2 = labelled but occluded, 3 = not labelled; it becomes the project's COCO convention
(2, 1 and 0, with x = y = 0 for 0).

The file (~300 MB for train) is streamed with ijson, one image entry at a time, into compact
arrays: memory grows with the people kept, not with the file's JSON tree.
"""

from __future__ import annotations

import re
from array import array
from pathlib import Path
from typing import Any

import ijson
import numpy as np

from gppf_dist.data.convert.layouts.base import Converted, Members, open_rgb
from gppf_dist.data.convert.layouts.coco import person_sample, require_image

AIC_KEYPOINTS = [
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "head_top", "neck",
]  # fmt: skip
"""AIC's 14 keypoints, in the order of the annotation file's triples."""

AIC_SKELETON = [
    [0, 1], [1, 2], [3, 4], [4, 5],  # arms
    [6, 7], [7, 8], [9, 10], [10, 11],  # legs
    [12, 13], [13, 0], [13, 3],  # head_top-neck, neck-shoulders
]  # fmt: skip
"""0-based keypoint pairs to draw (ours: the release names none): the limbs, head_top-neck and
neck-shoulders."""

VISIBILITY = {1: 2, 2: 1, 3: 0}
"""AIC visibility -> COCO's (2 = visible, 1 = labelled but occluded, 0 = not labelled)."""

AIC_PARTS = {"train": "train", "val": "validation"}
"""Split -> the word AIC's file and folder names use for it."""

_PART_OF_FILE = re.compile(r"keypoint_([a-z_]+?)_annotations")


def aic_source(src: Path, images: Path | None, split: str) -> tuple[Path, list[Path]]:
    """The annotation file and the folders its images are looked up in.

    `src` the JSON file, or a folder holding the split's `keypoint_<part>_annotations_*.json`
    (part `train` or `validation`) directly or in a subfolder (the release's
    `ai_challenger_keypoint_<part>_<date>/`). Images in `--images`, else in the
    `keypoint_<part>_images_*` folder beside the JSON or in a sibling folder, else beside it."""
    part = AIC_PARTS[split]
    if src.is_dir():
        pattern = f"keypoint_{part}_annotations_*.json"
        found = sorted(src.glob(pattern)) + sorted(src.glob(f"*/{pattern}"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)} files"
            raise ValueError(
                f"convert aic-keypoints: --src {src} holds {what} {pattern} (in it or a "
                "subfolder): pass the annotation file as --src"
            )
        src = found[0]
    if images is not None:
        return src, [images]
    m = _PART_OF_FILE.match(src.name)
    pattern = f"keypoint_{m.group(1) if m else part}_images_*"
    near = [*sorted(src.parent.glob(pattern)), *sorted(src.parent.parent.glob(f"*/{pattern}"))]
    dirs = list(dict.fromkeys(d for d in near if d.is_dir()))
    return src, dirs or [src.parent, src.parent / "images"]


def _numbers(v: Any, n: int) -> bool:
    return (
        isinstance(v, list)
        and len(v) == n
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    )


class AicAccumulator:
    """Collects the people of AIC image entries, one entry at a time, into compact arrays."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.kps = array("f")
        self.boxes = array("d")
        self.entries = 0
        self.skipped: dict[str, int] = {}

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add_entry(self, entry: Any) -> None:
        """One image entry: each person with a box and at least one labelled keypoint is kept;
        a malformed entry or person is counted as `bad_annotation`, a person with no labelled
        keypoint as `no_keypoints`."""
        self.entries += 1
        image_id = entry.get("image_id") if isinstance(entry, dict) else None
        people = entry.get("keypoint_annotations") if isinstance(entry, dict) else None
        ok_id = isinstance(image_id, str) and image_id not in ("", ".", "..")
        if not ok_id or "/" in image_id or "\\" in image_id or not isinstance(people, dict):
            self._skip("bad_annotation")
            return
        boxes = entry.get("human_annotations")
        boxes = boxes if isinstance(boxes, dict) else {}
        name = f"{image_id}.jpg"
        for human, flat in people.items():
            box = boxes.get(human)
            n = len(AIC_KEYPOINTS)
            if not _numbers(flat, 3 * n) or not _numbers(box, 4):
                self._skip("bad_annotation")
                continue
            vis = flat[2::3]
            if any(v not in VISIBILITY for v in vis):
                self._skip("bad_annotation")
                continue
            if all(VISIBILITY[v] == 0 for v in vis):
                self._skip("no_keypoints")
                continue
            for k, v in enumerate(vis):
                coco_v = VISIBILITY[v]
                xy = (flat[3 * k], flat[3 * k + 1]) if coco_v else (0.0, 0.0)
                self.kps.extend((float(xy[0]), float(xy[1]), float(coco_v)))
            x1, y1, x2, y2 = (float(c) for c in box)
            self.boxes.extend((x1, y1, x2 - x1, y2 - y1))  # COCO's xywh
            self.names.append(name)


def read_aic_tables(ann_file: Path) -> AicAccumulator:
    """The people of an AIC annotation file, streamed (ijson); ValueError naming the file if it
    is not a JSON list of image entries."""
    acc = AicAccumulator()
    try:
        with open(ann_file, "rb") as f:
            for entry in ijson.items(f, "item", use_float=True):
                acc.add_entry(entry)
    except (OSError, ijson.JSONError) as exc:
        raise ValueError(f"convert aic-keypoints: cannot read {ann_file}: {exc}") from exc
    if not acc.entries:
        raise ValueError(
            f"convert aic-keypoints: {ann_file}: no image entries (AIC's annotation file is a "
            "JSON list of {image_id, keypoint_annotations, human_annotations} objects)"
        )
    return acc


def read_aic_keypoints(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """AI Challenger keypoints (see `aic_source` for `--src`/`--images`): one sample per person,
    cropped to its box grown by 15 % as `coco-keypoints` crops (the same sample schema and
    rules: a box clipped to the image, a crop under 2 pixels skipped as `empty_box`, a keypoint
    outside the crop unlabelled). People are listed by image id, in the file's order within an
    image; a person with no labelled keypoint is skipped and counted (`no_keypoints`)."""
    ann_file, dirs = aic_source(src, images, split)
    acc = read_aic_tables(ann_file)
    n = len(AIC_KEYPOINTS)
    kps = np.frombuffer(acc.kps, dtype=np.float32).reshape(-1, 3 * n)
    boxes = np.frombuffer(acc.boxes, dtype=np.float64).reshape(-1, 4)
    order = sorted(range(len(acc.names)), key=acc.names.__getitem__)
    items = [(acc.names[row], row) for row in order]

    def load(item: tuple[str, int]) -> Members:
        name, row = item
        full = open_rgb(require_image(name, dirs))
        return person_sample(full, name, boxes[row].tolist(), kps[row].tolist(), n)

    space = {"keypoints": list(AIC_KEYPOINTS), "skeleton": [list(e) for e in AIC_SKELETON]}
    return Converted("pose", "aic", space, items, load, dict(acc.skipped))
