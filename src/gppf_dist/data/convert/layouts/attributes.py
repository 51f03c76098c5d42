"""Pedestrian attributes: a CSV of image names and 0/1 attribute columns."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from gppf_dist.data.convert.layouts.base import (
    Converted,
    ItemError,
    Members,
    find_image,
    image_sample,
)


def attribute_loader(dirs: list[Path]) -> Callable[[tuple[str, tuple[int, ...]]], Members]:
    """The loader of `(image name, attribute tuple)` items, images looked up in `dirs`."""

    def load(item: tuple[str, tuple[int, ...]]) -> Members:
        path = find_image(item[0], dirs)
        if path is None:
            raise ItemError("missing_image", f"{item[0]} is in none of {[str(d) for d in dirs]}")
        return image_sample(path, {"attributes": list(item[1])})

    return load


def read_attr_csv(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """PA-100K style CSV: first column the image name, then one 0/1 column per attribute."""
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"convert attr-csv: {src}: header must be image name + attribute names")
    names = [n.strip() for n in rows[0][1:]]
    items, bad = [], 0
    for row in rows[1:]:
        values = [v.strip() for v in row[1:]]
        if len(values) != len(names) or any(v not in ("0", "1") for v in values):
            bad += 1
            continue
        items.append((row[0].strip(), tuple(int(v) for v in values)))
    dirs = [images] if images is not None else [src.parent, src.parent / "images"]
    load = attribute_loader(dirs)
    skipped = {"bad_row": bad} if bad else {}
    return Converted("attributes", "attr_csv", {"attributes": names}, items, load, skipped)
