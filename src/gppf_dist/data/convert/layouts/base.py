"""What a layout reader hands `gppf-shards convert`: lightweight source items plus a loader.

A reader lists its dataset as `Converted.items`, an indexable sequence of small picklable items
(a path and a label, an offset into a record file, a row of an annotation table), in a
deterministic order. `Converted.load(item)` turns one item into a sample's members (`jpg` +
`json`, and `png`/`cls` where the task type has them). So the converter can shuffle the order and
hand whole shards to worker processes without ever holding image bytes for more than one sample.

An item that turns out bad while loading raises `ItemError(reason)`: the converter counts it by
reason and goes on. Items left out while listing are counted in `Converted.skipped`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
JPEG_QUALITY = 95

Members = dict[str, bytes]


class ItemError(Exception):
    """A source item that cannot become a sample; `reason` is the counter key."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass
class Converted:
    """A listed dataset: task type, label space, its items and how to load one."""

    type: str
    dataset: str
    label_space: dict[str, Any]
    items: Sequence[Any]
    load: Callable[[Any], Members]
    skipped: dict[str, int] = field(default_factory=dict)
    """Source items left out while listing, by reason."""

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def find_image(name: str, dirs: list[Path]) -> Path | None:
    """`name` in the first of `dirs` that has it."""
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def open_rgb(source: Path | bytes) -> Image.Image:
    """The decoded RGB image; ItemError("bad_image") naming the file if it does not decode."""
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        where = source if isinstance(source, Path) else "image bytes"
        raise ItemError("bad_image", f"{where}: {exc}") from None


def jpeg_member(img: Image.Image | Path | bytes) -> tuple[bytes, int, int]:
    """JPEG bytes and (width, height); RGB JPEG bytes/files are copied as is, others re-encoded.

    ItemError("bad_image") if a file or byte string does not decode."""
    if not isinstance(img, Image.Image):
        data = img.read_bytes() if isinstance(img, Path) else img
        try:
            with Image.open(io.BytesIO(data)) as opened:
                if opened.format == "JPEG" and opened.mode == "RGB":
                    w, h = opened.size
                    opened.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                    opened.load()  # a truncated file fails here (a 1/8-scale decode is cheap)
                    return data, w, h
                img = opened.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            where = img if isinstance(img, Path) else "image bytes"
            raise ItemError("bad_image", f"{where}: {exc}") from None
    if img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), img.width, img.height


def json_member(ann: dict[str, Any]) -> bytes:
    return json.dumps(ann, separators=(",", ":")).encode("utf-8")


def image_sample(
    image: Image.Image | Path | bytes, ann: dict[str, Any], cls: bool = False
) -> Members:
    """`jpg` + `json` members for one image; `ann` gets the image's width and height first."""
    jpg, w, h = jpeg_member(image)
    members = {"jpg": jpg, "json": json_member({"width": w, "height": h, **ann})}
    if cls:
        members["cls"] = str(ann["label"]).encode()
    return members
