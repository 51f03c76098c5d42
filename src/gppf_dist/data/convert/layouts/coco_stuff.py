"""COCO-Stuff 164k: COCO 2017's images with the release's per-pixel label maps.

The label maps (`stuffthingmaps_trainval2017.zip`) are 8-bit PNGs `<image id>.png`, one per
COCO image `<image id>.jpg`. Pixel values 0..181 are the 182 class indices (things 0..90,
which are COCO's category ids 1..91 less one, the 11 ids COCO never uses included; stuff
91..181) and 255 is unlabelled, which is the segmentation task's ignore value: ids are kept as
they are. The label space is always the 182 classes, so train and val agree whatever ids
either holds.
"""

from __future__ import annotations

import re
from pathlib import Path

from gppf_dist.data.convert.layouts.base import Converted
from gppf_dist.data.convert.layouts.seg import paired_items, seg_loader

STUFF_CLASSES = 182
"""Class indices 0..181 of the label maps."""

LABELS_FILE = "labels.txt"
_LABEL_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.*?)\s*$")


def stuff_classes(folders: list[Path]) -> list[str]:
    """The 182 class names: from the first `labels.txt` in `folders` (COCO-Stuff's own list,
    lines `<id>: <name>` with 0 = unlabeled and 1..182 the classes, so PNG index i is id i+1),
    else `class_<i>`. A line that is not `<id>: <name>` or an id outside 0..182 is a ValueError
    naming the file and line."""
    names = [f"class_{i}" for i in range(STUFF_CLASSES)]
    path = next((d / LABELS_FILE for d in folders if (d / LABELS_FILE).is_file()), None)
    if path is None:
        return names
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _LABEL_LINE.match(line)
        if m is None or int(m.group(1)) > STUFF_CLASSES:
            raise ValueError(
                f"convert coco-stuff: {path}:{n}: expected `<id>: <name>` with id 0..182 "
                f"(COCO-Stuff's labels.txt), got {line!r:.80}"
            )
        if int(m.group(1)) > 0 and m.group(2):
            names[int(m.group(1)) - 1] = m.group(2)
    return names


def _has_png(folder: Path) -> bool:
    return folder.is_dir() and next(folder.glob("*.png"), None) is not None


def stuff_mask_dir(src: Path, split: str) -> Path:
    """The split's label-map folder: `src` itself when it holds the PNGs, else
    `src/annotations/<split>2017` (the COCO-Stuff tree) or `src/<split>2017` (the unpacked
    stuffthingmaps folder)."""
    part = f"{split}2017"
    for d in (src, src / "annotations" / part, src / part):
        if _has_png(d):
            return d
    raise ValueError(
        f"convert coco-stuff: --src {src} holds no label maps: give the folder of the split's "
        f"PNGs, or one with annotations/{part}/*.png or {part}/*.png"
    )


def read_coco_stuff(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """COCO-Stuff 164k: label maps `<id>.png` (see `stuff_mask_dir`) with COCO images `<id>.jpg`
    in `--images`, by default `images/<split>2017/` or `<split>2017/` of the folder above the
    label-map folder's parent (the tree COCO-Stuff's download script makes).

    Class names from a `labels.txt` beside the maps (see `stuff_classes`). An image without a
    label map is counted as `missing_mask`, a label map without an image as `missing_image`;
    a map with an id above 181 other than 255 is skipped while loading (`bad_mask_id`)."""
    mask_dir = stuff_mask_dir(src, split)
    base = mask_dir.parent.parent
    if images is None:
        part = mask_dir.name if mask_dir == src else f"{split}2017"
        found = [d for d in (base / "images" / part, base / part) if d.is_dir() and d != mask_dir]
        if not found:
            raise ValueError(
                f"convert coco-stuff: no image folder for {mask_dir} (looked for "
                f"{base / 'images' / part} and {base / part}): pass --images"
            )
        images = found[0]
    elif not images.is_dir():
        raise ValueError(f"convert coco-stuff: --images {images} is not a folder")
    items, missing = paired_items(images, mask_dir)
    paired = {Path(m).stem for _, m in items}
    orphans = sum(p.stem not in paired for p in mask_dir.glob("*.png"))
    skipped = {k: v for k, v in (("missing_mask", missing), ("missing_image", orphans)) if v}
    folders = list(dict.fromkeys([src, mask_dir, mask_dir.parent, base]))
    space = {"classes": stuff_classes(folders)}
    load = seg_loader(num_classes=STUFF_CLASSES)
    return Converted("segmentation", "cocostuff", space, items, load, skipped)
