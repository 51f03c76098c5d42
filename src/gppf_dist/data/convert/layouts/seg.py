"""Semantic segmentation: an image folder plus a folder of PNG masks with the same stems."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gppf_dist.data.convert.layouts.base import (
    Converted,
    ItemError,
    Members,
    image_files,
    jpeg_member,
    json_member,
)

IGNORE = 255
"""Mask value of pixels no loss or metric counts (as the segmentation task reads masks)."""


def _max_id(mask_file: Path) -> int:
    with Image.open(mask_file) as m:
        ids = np.unique(np.array(m))
    ids = ids[ids != IGNORE]
    return int(ids.max()) if ids.size else 0


def mask_png(
    path: Path,
    size: tuple[int, int],
    lut: np.ndarray | None = None,
    num_classes: int | None = None,
) -> bytes:
    """The mask at `path` as an 8-bit `L` PNG, ids mapped through `lut` if given; ItemError if
    it does not decode or its size is not the image's (width, height), and with `num_classes`
    ItemError("bad_mask_id") if an id (after `lut`) is neither below it nor IGNORE."""
    try:
        with Image.open(path) as m:
            mask = np.array(m if m.mode in ("L", "P") else m.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError("bad_mask", f"{path}: {exc}") from None
    if mask.shape != (size[1], size[0]):
        raise ItemError("mask_size", f"{path}: {mask.shape[::-1]} != image {size}")
    if lut is not None:
        mask = lut[mask]
    if num_classes is not None:
        bad = (mask >= num_classes) & (mask != IGNORE)
        if bad.any():
            ids = np.unique(mask[bad]).tolist()
            raise ItemError(
                "bad_mask_id", f"{path}: ids {ids} outside 0..{num_classes - 1} and not {IGNORE}"
            )
    out = io.BytesIO()
    Image.fromarray(mask, mode="L").save(out, format="PNG")
    return out.getvalue()


def paired_items(image_dir: Path, mask_dir: Path) -> tuple[list[tuple[str, str]], int]:
    """`(image, mask)` paths for every image with a mask of the same stem; images without one."""
    masks = {p.stem: p for p in mask_dir.glob("*.png")}
    items, missing = [], 0
    for path in image_files(image_dir):
        if path.stem in masks:
            items.append((str(path), str(masks[path.stem])))
        else:
            missing += 1
    return items, missing


def seg_loader(
    lut: np.ndarray | None = None, num_classes: int | None = None
) -> Callable[[tuple[str, str]], Members]:
    """The loader of `(image, mask)` items: the image's jpg, its size and the mask's png
    (`lut` and `num_classes` as `mask_png` takes them)."""

    def load(item: tuple[str, str]) -> Members:
        jpg, w, h = jpeg_member(Path(item[0]))
        png = mask_png(Path(item[1]), (w, h), lut, num_classes)
        return {"jpg": jpg, "json": json_member({"width": w, "height": h}), "png": png}

    return load


def read_seg_png(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """ADE20K style: `src/images/<stem>.jpg` + `src/masks/<stem>.png` (or `annotations/`).

    Class names come from `src/classes.txt` (one per line, index = mask id) if present, else
    `class_<i>` up to the largest id seen (255 = ignore). Mask ids are kept as they are.
    """
    image_dir = images or src / "images"
    mask_dir = next((d for d in (src / "masks", src / "annotations") if d.is_dir()), None)
    if mask_dir is None or not image_dir.is_dir():
        raise ValueError(f"convert seg-png: --src {src} needs images/ and masks/ (or annotations/)")
    items, missing = paired_items(image_dir, mask_dir)
    names_file = src / "classes.txt"
    if names_file.is_file():
        classes = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
    else:
        top = max((_max_id(Path(m)) for _, m in items), default=0)
        classes = [f"class_{i}" for i in range(top + 1)]
    skipped = {"missing_mask": missing} if missing else {}
    return Converted("segmentation", "seg_png", {"classes": classes}, items, seg_loader(), skipped)


ADE_ROOT = "ADEChallengeData2016"
ADE_SPLITS = {"train": "training", "val": "validation"}
ADE_CLASSES = 150


def ade_classes(root: Path) -> list[str]:
    """The 150 class names from `objectInfo150.txt` (header, then `Idx Ratio Train Val Name`
    rows) when the root has it, else `class_1` .. `class_150` (named by their ADE20K ids)."""
    info = root / "objectInfo150.txt"
    names = [f"class_{i}" for i in range(1, ADE_CLASSES + 1)]
    if info.is_file():
        for line in info.read_text(encoding="utf-8").splitlines()[1:]:
            cols = line.split(None, 4)
            if len(cols) == 5 and cols[0].isdigit() and 1 <= int(cols[0]) <= ADE_CLASSES:
                names[int(cols[0]) - 1] = cols[4].strip()
    return names


def read_ade20k(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """ADE20K's scene-parsing release: `ADEChallengeData2016/images/{training,validation}/*.jpg`
    + `annotations/{training,validation}/*.png`; `--src` that folder or its parent.

    ADE20K's mask value 0 is "other" (no class) and 1..150 are the classes: 0 becomes 255
    (ignore, as the segmentation task reads masks) and k becomes class k-1, so the label space
    holds exactly the 150 classes; values above 150 (none in the release) become 255 too."""
    root = src / ADE_ROOT if (src / ADE_ROOT).is_dir() else src
    part = ADE_SPLITS[split]
    image_dir, mask_dir = images or root / "images" / part, root / "annotations" / part
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise ValueError(f"convert ade20k: --src {src}: {d} does not exist")
    items, missing = paired_items(image_dir, mask_dir)
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[1 : ADE_CLASSES + 1] = np.arange(ADE_CLASSES, dtype=np.uint8)
    skipped = {"missing_mask": missing} if missing else {}
    space = {"classes": ade_classes(root)}
    return Converted("segmentation", "ade20k", space, items, seg_loader(lut), skipped)
