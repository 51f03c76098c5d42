"""COCO-style detection and person-keypoint annotations (COCO, Objects365)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gppf_dist.data.convert.layouts.base import (
    Converted,
    ItemError,
    Members,
    find_image,
    image_sample,
    jpeg_member,
    json_member,
    open_rgb,
)
from gppf_dist.data.convert.layouts.coco_json import read_coco_tables

KEYPOINT_MARGIN = 0.15
"""A person crop is its box grown by this fraction of the box size on each side."""


COCO_FILES = {"det": "instances_{split}2017.json", "keypoints": "person_keypoints_{split}2017.json"}


def coco_source(src: Path, images: Path | None, split: str, kind: str) -> tuple[Path, list[Path]]:
    """The annotation file and the folders its images are looked up in.

    `src` a COCO root: `annotations/<instances|person_keypoints>_<split>2017.json`, images in
    `<split>2017/`. `src` a JSON file (Objects365's `zhiyuan_objv2_train.json`, any COCO-style
    file): images beside it or in its `images/` (or `--images`; file names may hold subfolders).
    """
    if src.is_dir():
        ann = src / "annotations" / COCO_FILES[kind].format(split=split)
        if not ann.is_file():
            raise ValueError(f"convert coco: --src {src} is a folder without {ann}")
        return ann, [images] if images is not None else [src / f"{split}2017"]
    if images is not None:
        return src, [images]
    return src, [src.parent, src.parent / "images"]


def dataset_name(ann_file: Path) -> str:
    """`objects365` for Objects365's annotation files, else `coco`."""
    name = ann_file.name.lower()
    return "objects365" if name.startswith("zhiyuan_objv") or "objects365" in name else "coco"


def require_image(name: str, dirs: list[Path]) -> Path:
    """`name` in the first of `dirs` that has it; ItemError("missing_image") if none does."""
    path = find_image(name, dirs)
    if path is None:
        raise ItemError("missing_image", f"{name} is in none of {[str(d) for d in dirs]}")
    return path


def read_coco_det(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """COCO instances JSON: boxes xywh -> absolute xyxy, category ids -> contiguous labels.

    Crowd boxes, boxes of unknown categories and boxes of zero size are dropped (counted);
    an image keeps its place with the boxes left, even none."""
    ann_file, dirs = coco_source(src, images, split, "det")
    t = read_coco_tables(ann_file)
    cats = sorted(t.categories, key=lambda c: c["id"])
    label_of = {c["id"]: i for i, c in enumerate(cats)}
    labels = np.fromiter((label_of.get(int(c), -1) for c in t.ann_cat), np.int64, len(t.ann_cat))
    empty = (t.ann_bbox[:, 2] <= 0) | (t.ann_bbox[:, 3] <= 0)
    keep = (t.ann_crowd == 0) & (labels >= 0) & ~empty
    skipped = dict(t.skipped)
    for reason, mask in (
        ("crowd_box", t.ann_crowd != 0),
        ("unknown_category", (t.ann_crowd == 0) & (labels < 0)),
        ("empty_box", (t.ann_crowd == 0) & (labels >= 0) & empty),
    ):
        if mask.any():
            skipped[reason] = int(mask.sum())
    ann_image, boxes, labels = t.ann_image[keep], t.ann_bbox[keep], labels[keep]
    lo = np.searchsorted(ann_image, t.image_ids, side="left")
    hi = np.searchsorted(ann_image, t.image_ids, side="right")
    items = [(name, int(a), int(b)) for name, a, b in zip(t.file_names, lo, hi, strict=True)]

    def load(item: tuple[str, int, int]) -> Members:
        name, a, b = item
        jpg, w, h = jpeg_member(require_image(name, dirs))
        xyxy = boxes[a:b].copy()
        xyxy[:, 2:] += xyxy[:, :2]
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0.0, float(w))
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0.0, float(h))
        ok = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        ann = {
            "width": w,
            "height": h,
            "boxes": xyxy[ok].tolist(),
            "labels": labels[a:b][ok].tolist(),
        }
        return {"jpg": jpg, "json": json_member(ann)}

    space = {"classes": [c["name"] for c in cats]}
    return Converted("detection", dataset_name(ann_file), space, items, load, skipped)


def person_sample(
    full: Image.Image, where: str, box: list[float], flat: list[float], num: int
) -> Members:
    """One person's sample: `full` cropped to the COCO xywh `box` grown by KEYPOINT_MARGIN
    (clipped to the image) with the box and the first `num` of the flat COCO `[x, y, v]`
    triples `flat` moved into the crop; a keypoint unlabelled (v = 0) or outside the crop
    becomes [0, 0, 0]. ItemError("empty_box") naming `where` if the crop is under 2 pixels."""
    x, y, bw, bh = box
    mx, my = bw * KEYPOINT_MARGIN, bh * KEYPOINT_MARGIN
    x0, y0 = max(0, int(x - mx)), max(0, int(y - my))
    x1 = min(full.width, int(np.ceil(x + bw + mx)))
    y1 = min(full.height, int(np.ceil(y + bh + my)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ItemError("empty_box", f"{where}: person box {box}")
    w, h = x1 - x0, y1 - y0
    points = []
    for k in range(num):
        kx, ky, v = flat[3 * k] - x0, flat[3 * k + 1] - y0, int(flat[3 * k + 2])
        inside = v > 0 and 0 <= kx <= w and 0 <= ky <= h
        points.append([float(kx), float(ky), v] if inside else [0.0, 0.0, 0])
    clipped = [max(0.0, x - x0), max(0.0, y - y0), min(w, x + bw - x0), min(h, y + bh - y0)]
    ann = {"keypoints": points, "box": [float(v) for v in clipped]}
    return image_sample(full.crop((x0, y0, x1, y1)), ann)


def read_coco_keypoints(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """COCO person keypoints: one sample per annotated person, cropped to its (grown) box."""
    ann_file, dirs = coco_source(src, images, split, "keypoints")
    t = read_coco_tables(ann_file, keypoints=True)
    cat = next((c for c in t.categories if c.get("keypoints")), None)
    if cat is None:
        raise ValueError(f"convert coco-keypoints: {ann_file}: no category with `keypoints`")
    names = list(cat["keypoints"])
    skeleton = [[i - 1, j - 1] for i, j in cat.get("skeleton", [])]  # COCO is 1-based
    people = np.flatnonzero(t.ann_num_kp > 0)
    name_of = dict(zip(t.image_ids.tolist(), t.file_names, strict=True))
    items = []
    skipped = dict(t.skipped)
    for row in people.tolist():
        name = name_of.get(int(t.ann_image[row]))
        if name is None:
            skipped["unknown_image"] = skipped.get("unknown_image", 0) + 1
            continue
        items.append((name, row))
    boxes, kps = t.ann_bbox, t.ann_kps
    assert kps is not None

    def load(item: tuple[str, int]) -> Members:
        name, row = item
        full = open_rgb(require_image(name, dirs))
        return person_sample(full, name, boxes[row].tolist(), kps[row].tolist(), len(names))

    space = {"keypoints": names, "skeleton": skeleton}
    return Converted("pose", "coco", space, items, load, skipped)
