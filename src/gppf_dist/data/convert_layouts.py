"""Readers for the standard dataset layouts `gppf-shards convert` understands.

Each `read_<layout>(src, images)` returns a `Converted` whose samples are produced lazily in a
deterministic (sorted) order. `images` is the image directory for the JSON/CSV layouts (default:
next to the annotation file, or its `images/` subfolder). Source items that cannot become a valid
sample are skipped and counted in `Converted.skipped` by reason.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gppf_dist.data.convert import Converted, image_files, jpeg_member, json_member

MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)")
"""Market-1501 names: `<identity>_c<camera>s<sequence>_<frame>_<box>.jpg`; -1/0 are junk."""


def _find_image(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def _image_dirs(ann_file: Path, images: Path | None) -> list[Path]:
    return [images] if images is not None else [ann_file.parent, ann_file.parent / "images"]


def read_imagefolder(src: Path, images: Path | None = None) -> Converted:
    """ImageNet style: `src/<class>/<image>`; classes are the sorted folder names."""
    classes = sorted(d.name for d in src.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"convert imagefolder: --src {src} has no class folders")

    def samples() -> Iterator[dict[str, bytes]]:
        for label, name in enumerate(classes):
            for path in image_files(src / name):
                jpg, w, h = jpeg_member(path)
                ann = {"width": w, "height": h, "label": label}
                yield {"jpg": jpg, "json": json_member(ann), "cls": str(label).encode()}

    return Converted("classification", "imagefolder", {"classes": classes}, samples())


def _load_coco(src: Path) -> dict[str, Any]:
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"convert: cannot read COCO JSON --src {src}: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"convert: {src}: `{key}` must be a list, got {data.get(key)!r:.60}")
    return data


def _by_image(data: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        out.setdefault(a["image_id"], []).append(a)
    return out


def _xyxy(bbox: list[float], w: int, h: int) -> list[float] | None:
    x, y, bw, bh = bbox
    box = [max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh)]
    return box if box[2] - box[0] > 0 and box[3] - box[1] > 0 else None


def read_coco_det(src: Path, images: Path | None = None) -> Converted:
    """COCO instances JSON: boxes xywh -> absolute xyxy, category ids -> contiguous labels."""
    data = _load_coco(src)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: i for i, c in enumerate(cats)}
    conv = Converted("detection", "coco", {"classes": [c["name"] for c in cats]}, iter(()))
    anns, dirs = _by_image(data), _image_dirs(src, images)

    def samples() -> Iterator[dict[str, bytes]]:
        for img in sorted(data["images"], key=lambda i: i["id"]):
            path = _find_image(img["file_name"], dirs)
            if path is None:
                conv.skip("missing_image")
                continue
            jpg, w, h = jpeg_member(path)
            boxes, labels = [], []
            for a in anns.get(img["id"], []):
                box = _xyxy(a["bbox"], w, h)
                if a.get("iscrowd", 0) or box is None:
                    conv.skip("crowd_or_empty_box")
                    continue
                boxes.append(box)
                labels.append(label_of[a["category_id"]])
            ann = {"width": w, "height": h, "boxes": boxes, "labels": labels}
            yield {"jpg": jpg, "json": json_member(ann)}

    conv.samples = samples()
    return conv


def read_coco_keypoints(src: Path, images: Path | None = None, margin: float = 0.15) -> Converted:
    """COCO person keypoints: one sample per annotated person, cropped to its (grown) box."""
    data = _load_coco(src)
    cat = next((c for c in data["categories"] if c.get("keypoints")), None)
    if cat is None:
        raise ValueError(f"convert coco-keypoints: {src}: no category with `keypoints`")
    skeleton = [[i - 1, j - 1] for i, j in cat.get("skeleton", [])]  # COCO is 1-based
    space = {"keypoints": list(cat["keypoints"]), "skeleton": skeleton}
    conv = Converted("pose", "coco", space, iter(()))
    anns, dirs = _by_image(data), _image_dirs(src, images)

    def samples() -> Iterator[dict[str, bytes]]:
        for img in sorted(data["images"], key=lambda i: i["id"]):
            people = [a for a in anns.get(img["id"], []) if a.get("num_keypoints", 0) > 0]
            if not people:
                continue
            path = _find_image(img["file_name"], dirs)
            if path is None:
                conv.skip("missing_image")
                continue
            with Image.open(path) as opened:
                full = opened.convert("RGB")
            for a in sorted(people, key=lambda a: a["id"]):
                x, y, bw, bh = a["bbox"]
                mx, my = bw * margin, bh * margin
                x0, y0 = max(0, int(x - mx)), max(0, int(y - my))
                x1 = min(full.width, int(np.ceil(x + bw + mx)))
                y1 = min(full.height, int(np.ceil(y + bh + my)))
                if x1 - x0 < 2 or y1 - y0 < 2:
                    conv.skip("empty_box")
                    continue
                jpg, w, h = jpeg_member(full.crop((x0, y0, x1, y1)))
                flat = a["keypoints"]
                kps = []
                for k in range(len(space["keypoints"])):
                    kx, ky, v = flat[3 * k] - x0, flat[3 * k + 1] - y0, int(flat[3 * k + 2])
                    inside = v > 0 and 0 <= kx <= w and 0 <= ky <= h
                    kps.append([float(kx), float(ky), v] if inside else [0.0, 0.0, 0])
                box = [max(0.0, x - x0), max(0.0, y - y0), min(w, x + bw - x0), min(h, y + bh - y0)]
                box = [float(v) for v in box]
                ann = {"width": w, "height": h, "keypoints": kps, "box": box}
                yield {"jpg": jpg, "json": json_member(ann)}

    conv.samples = samples()
    return conv


def _max_id(mask_file: Path) -> int:
    with Image.open(mask_file) as m:
        ids = np.unique(np.array(m))
    ids = ids[ids != 255]
    return int(ids.max()) if ids.size else 0


def read_seg_png(src: Path, images: Path | None = None) -> Converted:
    """ADE20K style: `src/images/<stem>.jpg` + `src/masks/<stem>.png` (or `annotations/`).

    Class names come from `src/classes.txt` (one per line, index = mask id) if present, else
    `class_<i>` up to the largest id seen (255 = ignore).
    """
    image_dir = images or src / "images"
    mask_dir = next((d for d in (src / "masks", src / "annotations") if d.is_dir()), None)
    if mask_dir is None or not image_dir.is_dir():
        raise ValueError(f"convert seg-png: --src {src} needs images/ and masks/ (or annotations/)")
    masks = {p.stem: p for p in mask_dir.glob("*.png")}
    names_file = src / "classes.txt"
    if names_file.is_file():
        classes = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
    else:
        top = max((_max_id(p) for p in masks.values()), default=0)
        classes = [f"class_{i}" for i in range(top + 1)]
    conv = Converted("segmentation", "seg_png", {"classes": classes}, iter(()))

    def samples() -> Iterator[dict[str, bytes]]:
        for path in image_files(image_dir):
            if path.stem not in masks:
                conv.skip("missing_mask")
                continue
            jpg, w, h = jpeg_member(path)
            with Image.open(masks[path.stem]) as m:
                mask = np.array(m if m.mode in ("L", "P") else m.convert("L"), dtype=np.uint8)
            if mask.shape != (h, w):
                conv.skip("mask_size")
                continue
            out = io.BytesIO()
            Image.fromarray(mask, mode="L").save(out, format="PNG")
            ann = {"width": w, "height": h}
            yield {"jpg": jpg, "json": json_member(ann), "png": out.getvalue()}

    conv.samples = samples()
    return conv


def read_reid(src: Path, images: Path | None = None) -> Converted:
    """Market-1501 naming; identity and camera as in the file name, junk ids (-1, 0) skipped."""
    files = image_files(src)
    parsed = [(p, MARKET_RE.match(p.name)) for p in files]
    ids = [int(m.group(1)) for _, m in parsed if m is not None and int(m.group(1)) > 0]
    conv = Converted("reid", "market1501", {"num_identities": max(ids, default=0) + 1}, iter(()))

    def samples() -> Iterator[dict[str, bytes]]:
        for path, match in parsed:
            if match is None:
                conv.skip("bad_name")
                continue
            identity, camera = int(match.group(1)), int(match.group(2))
            if identity <= 0:
                conv.skip("junk_identity")
                continue
            jpg, w, h = jpeg_member(path)
            ann = {"width": w, "height": h, "identity": identity, "camera": camera}
            yield {"jpg": jpg, "json": json_member(ann)}

    conv.samples = samples()
    return conv


def read_face_folders(src: Path, images: Path | None = None) -> Converted:
    """`src/<identity>/<image>`: identity = index of the folder name in sorted order."""
    names = sorted(d.name for d in src.iterdir() if d.is_dir())
    if not names:
        raise ValueError(f"convert face-folders: --src {src} has no identity folders")
    space = {"num_identities": len(names), "identities": names}

    def samples() -> Iterator[dict[str, bytes]]:
        for identity, name in enumerate(names):
            for path in image_files(src / name):
                jpg, w, h = jpeg_member(path)
                ann = {"width": w, "height": h, "identity": identity}
                yield {"jpg": jpg, "json": json_member(ann)}

    return Converted("face", "face_folders", space, samples())


def read_attr_csv(src: Path, images: Path | None = None) -> Converted:
    """PA-100K style CSV: first column the image name, then one 0/1 column per attribute."""
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"convert attr-csv: {src}: header must be image name + attribute names")
    names = [n.strip() for n in rows[0][1:]]
    conv = Converted("attributes", "attr_csv", {"attributes": names}, iter(()))
    dirs = _image_dirs(src, images)

    def samples() -> Iterator[dict[str, bytes]]:
        for row in rows[1:]:
            values = [v.strip() for v in row[1:]]
            if len(values) != len(names) or any(v not in ("0", "1") for v in values):
                conv.skip("bad_row")
                continue
            path = _find_image(row[0].strip(), dirs)
            if path is None:
                conv.skip("missing_image")
                continue
            jpg, w, h = jpeg_member(path)
            ann = {"width": w, "height": h, "attributes": [int(v) for v in values]}
            yield {"jpg": jpg, "json": json_member(ann)}

    conv.samples = samples()
    return conv


LAYOUTS: dict[str, tuple[Callable[..., Converted], str]] = {
    "imagefolder": (read_imagefolder, "cls"),
    "coco-det": (read_coco_det, "det"),
    "coco-keypoints": (read_coco_keypoints, "pose"),
    "seg-png": (read_seg_png, "seg"),
    "reid": (read_reid, "reid"),
    "face-folders": (read_face_folders, "face"),
    "attr-csv": (read_attr_csv, "attr"),
}
"""Layout name -> (reader, default task name)."""
