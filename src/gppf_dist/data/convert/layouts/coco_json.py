"""A COCO-style annotation file (COCO, Objects365) as compact tables, not a tree of dicts.

The file is streamed with ijson, one section at a time, so Objects365's multi-GB annotation file
needs memory for the kept fields only (about 60 bytes per box), not for its JSON tree.

Only the fields the converters use are kept, one numpy row per annotation (image id, category
id, box, crowd flag, and for keypoint files the keypoints of annotated people), grouped by image
with a stable sort, so the file's order within an image is kept. `CocoTables.rows(i)` is the
slice of image i's annotations. Annotations the converters cannot use are counted in `skipped`.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson
import numpy as np


@dataclass
class CocoTables:
    categories: list[dict[str, Any]]
    image_ids: np.ndarray
    """int64, ascending."""
    file_names: list[str]
    ann_image: np.ndarray
    """int64 image id per annotation, grouped by image (ascending)."""
    ann_id: np.ndarray
    ann_cat: np.ndarray
    ann_bbox: np.ndarray
    """float64 (m, 4) COCO xywh."""
    ann_crowd: np.ndarray
    ann_num_kp: np.ndarray
    ann_kps: np.ndarray | None
    """float32 (m, 3K) flat COCO keypoints when read with keypoints, else None."""
    skipped: dict[str, int] = field(default_factory=dict)

    def rows(self, i: int) -> slice:
        image_id = self.image_ids[i]
        lo = int(np.searchsorted(self.ann_image, image_id, side="left"))
        hi = int(np.searchsorted(self.ann_image, image_id, side="right"))
        return slice(lo, hi)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class CocoAccumulator:
    """Collects images, annotations and categories one entry at a time into `CocoTables`."""

    def __init__(self, keypoints: bool) -> None:
        self.keypoints = keypoints
        self.categories: list[dict[str, Any]] = []
        self.images: list[tuple[int, str]] = []
        self.image = array("q")
        self.ident = array("q")
        self.cat = array("q")
        self.bbox = array("d")
        self.crowd = array("b")
        self.num_kp = array("i")
        self.kps: list[np.ndarray] = []
        self.skipped: dict[str, int] = {}

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add_image(self, img: Any) -> None:
        ok = isinstance(img, dict) and isinstance(img.get("id"), int)
        if not ok or not isinstance(img.get("file_name"), str):
            self._skip("bad_image_entry")
            return
        self.images.append((img["id"], img["file_name"]))

    def add_category(self, cat: Any) -> None:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise ValueError(f"category entry must be an object with an integer id: {cat!r:.80}")
        self.categories.append(cat)

    def add_annotation(self, a: Any) -> None:
        box = a.get("bbox") if isinstance(a, dict) else None
        if (
            not isinstance(a, dict)
            or not isinstance(a.get("image_id"), int)
            or not isinstance(a.get("category_id"), int)
            or not isinstance(box, list)
            or len(box) != 4
            or not all(map(_number, box))
        ):
            self._skip("bad_annotation")
            return
        num_kp = int(a.get("num_keypoints", 0) or 0)
        if self.keypoints and num_kp > 0:
            flat = a.get("keypoints")
            if not isinstance(flat, list) or len(flat) % 3 or not all(map(_number, flat)):
                self._skip("bad_annotation")
                return
            self.kps.append(np.asarray(flat, dtype=np.float32))
        elif self.keypoints:
            num_kp = 0
        self.image.append(a["image_id"])
        self.ident.append(int(a.get("id", 0)))
        self.cat.append(a["category_id"])
        self.bbox.extend(float(v) for v in box)
        self.crowd.append(1 if a.get("iscrowd", 0) else 0)
        self.num_kp.append(num_kp)

    def finish(self) -> CocoTables:
        self.images.sort()
        image_ids = np.fromiter((i for i, _ in self.images), np.int64, len(self.images))
        ann_image = np.frombuffer(self.image, dtype=np.int64)
        order = np.argsort(ann_image, kind="stable")
        num_kp = np.frombuffer(self.num_kp, dtype=np.int32)[order]
        kps = None
        if self.keypoints:
            width = max((len(k) for k in self.kps), default=0)
            rows = np.zeros((len(ann_image), width), dtype=np.float32)
            has = np.flatnonzero(np.frombuffer(self.num_kp, dtype=np.int32) > 0)
            for row, k in zip(has, self.kps, strict=True):
                rows[row, : len(k)] = k
            kps = rows[order]
        return CocoTables(
            categories=self.categories,
            image_ids=image_ids,
            file_names=[name for _, name in self.images],
            ann_image=ann_image[order],
            ann_id=np.frombuffer(self.ident, dtype=np.int64)[order],
            ann_cat=np.frombuffer(self.cat, dtype=np.int64)[order],
            ann_bbox=np.frombuffer(self.bbox, dtype=np.float64).reshape(-1, 4)[order],
            ann_crowd=np.frombuffer(self.crowd, dtype=np.int8)[order],
            ann_num_kp=num_kp,
            ann_kps=kps,
            skipped=self.skipped,
        )


def read_coco_tables(src: Path, keypoints: bool = False) -> CocoTables:
    """The tables of a COCO-style JSON file, streamed (ijson): memory grows with the compact
    rows, never with the file. ValueError naming the file if it is not one."""
    acc = CocoAccumulator(keypoints)
    sections = (
        ("categories", acc.add_category),
        ("images", acc.add_image),
        ("annotations", acc.add_annotation),
    )
    try:
        for key, add in sections:  # one pass each: only that section's entries are built
            with open(src, "rb") as f:
                for entry in ijson.items(f, f"{key}.item", use_float=True):
                    add(entry)
    except (OSError, ijson.JSONError) as exc:
        raise ValueError(f"convert: cannot read COCO JSON {src}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"convert: {src}: {exc}") from exc
    for key, found in (("images", acc.images), ("categories", acc.categories)):
        if not found:
            raise ValueError(f"convert: {src}: no `{key}` entries (a COCO-style JSON file needs "
                             "`images`, `annotations` and `categories` lists)")  # fmt: skip
    return acc.finish()
