"""`gppf-shards inspect`: draw samples of one task with their annotations into one grid PNG.

Samples come from the safe shard reader and must pass their type's schema check (bad ones are
skipped and counted). Small images are upscaled (nearest, integer factor) to >= `MIN_SHORT` px on
the short side; each cell shows the image with boxes / mask overlay / keypoints + skeleton, its key
and up to `TEXT_LINES` lines of text (class, identity, attributes...). Pillow only.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.ImageFilter import MaxFilter, MinFilter

from gppf_dist.data.decode.sample import SampleError, decode_sample, read_shard
from gppf_dist.data.format.manifest import LABEL_SPACE_KEYS, TaskManifest, load_manifest
from gppf_dist.data.format.schema import check_annotation, check_mask
from gppf_dist.tasks.base import Sample

DRAWABLE_TYPES = tuple(LABEL_SPACE_KEYS)  # the task types of shards/README.md
MIN_SHORT = 128
MAX_LONG = 320
TEXT_LINES = 3  # annotation text lines below each cell's key line; more is cut with '…'
LINE_H = 15
TEXT_H = (1 + TEXT_LINES) * LINE_H
PAD = 6
BG = (24, 24, 24)
# class colour = PALETTE[class id % len(PALETTE)]
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_Picked = tuple[list[Sample], dict[str, int]]  # samples to draw, skip counts by reason


@dataclass
class InspectResult:
    """What `inspect_task` drew: the PNG, the sample keys in grid order, skips by reason."""

    path: Path
    task: str
    type: str
    split: str
    keys: list[str]
    skipped: dict[str, int]
    size: tuple[int, int]


def _font() -> Font:
    try:
        return ImageFont.load_default(size=12)
    except (ImportError, TypeError, OSError):  # Pillow without FreeType: bitmap font
        return ImageFont.load_default()


def _name(names: Any, i: int) -> str:
    return str(names[i]) if isinstance(names, list) and 0 <= i < len(names) else str(i)


def _is_bg(label_space: dict[str, Any], c: int) -> bool:
    return _name(label_space.get("classes"), c).lower() == "background"


def _scale(w: int, h: int) -> float:
    if min(w, h) < MIN_SHORT:
        return float(max(1, min(math.ceil(MIN_SHORT / min(w, h)), MAX_LONG // max(w, h))))
    return MAX_LONG / max(w, h) if max(w, h) > MAX_LONG else 1.0


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """`text` cut (with '…') to fit `width` pixels."""
    while draw.textlength(text, font=font) > width and len(text) > 1:
        text = text[:-2] + "…"  # drops the previous '…' (if any) and one more character
    return text


def _wrap(draw: ImageDraw.ImageDraw, words: list[str], font: Font, width: int) -> list[str]:
    """Comma-separated `words` wrapped into at most TEXT_LINES lines of `width` pixels."""
    lines: list[str] = []
    for word in words:
        joined = f"{lines[-1]}, {word}" if lines else word
        if lines and draw.textlength(joined, font=font) <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    if len(lines) > TEXT_LINES:
        lines = lines[: TEXT_LINES - 1] + [", ".join(lines[TEXT_LINES - 1 :])]
    return [_fit(draw, line, font, width) for line in lines]


def _read(root: Path, tm: TaskManifest, split: str, n: int, seed: int | None) -> _Picked:
    """The first `n` good samples of a split, or those of `n` seeded indices; skips by reason."""
    shards = tm.shards(split)
    chosen: set[int] | None = None  # global sample indices (shard order) when seeded
    if seed is not None:
        total = sum(s.samples for s in shards)
        chosen = set(random.Random(seed).sample(range(total), min(n, total)))
    samples: list[Sample] = []
    skipped: Counter[str] = Counter()
    end = 0
    for shard in shards:
        first, end = end, end + shard.samples
        if len(samples) >= n or (chosen is not None and not any(first <= c < end for c in chosen)):
            continue  # done, or no chosen index in this shard: do not read it
        contents = read_shard(root / shard.path)
        if contents.error is not None:
            skipped[contents.error.reason] += 1
        for j, raw in enumerate(contents.samples):
            if len(samples) >= n:
                break
            if chosen is not None and first + j not in chosen:
                continue
            try:
                sample = decode_sample(raw, needs_mask=tm.type == "segmentation")
                h, w = sample.image.shape[:2]
                check_annotation(tm.type, raw.key, sample.ann, tm.label_space, w, h, split)
                if tm.type == "segmentation":
                    check_mask(raw.key, sample.mask, tm.label_space)
            except SampleError as exc:
                skipped[exc.reason] += 1
                continue
            samples.append(sample)
    return samples, dict(skipped)


def _annotate(img: Image.Image, s: Sample, tm: TaskManifest, k: float, font: Font) -> list[str]:
    """Draw `s`'s annotation on `img` (scaled by `k`); return the words for the text lines."""
    ann, ls, draw = s.ann, tm.label_space, ImageDraw.Draw(img)
    lw = max(1, round(k))
    if tm.type == "classification":
        return [_name(ls.get("classes"), ann["label"])]
    if tm.type == "attributes":
        names = [_name(ls.get("attributes"), i) for i, v in enumerate(ann["attributes"]) if v]
        return names or ["(no positive attributes)"]
    if tm.type in ("reid", "face"):
        return [f"id {ann['identity']}"] + ([f"cam {ann['camera']}"] if "camera" in ann else [])
    if tm.type == "detection":
        for box, label in zip(ann["boxes"], ann["labels"], strict=True):
            x1, y1, x2, y2 = (v * k for v in box)
            colour, name = PALETTE[label % len(PALETTE)], _name(ls.get("classes"), label)
            draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=lw)
            ty = y1 - LINE_H if y1 >= LINE_H else y1 + lw  # class name above the box, or inside
            draw.rectangle((x1, ty, x1 + font.getlength(name) + 3, ty + LINE_H - 1), fill=colour)
            ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
            draw.text((x1 + 2, ty), name, fill=ink, font=font)
        return [f"{len(ann['boxes'])} box" + ("es" if len(ann["boxes"]) != 1 else "")]
    if tm.type == "segmentation":
        fg = [c for c in range(len(ls.get("classes", []))) if not _is_bg(ls, c)]
        lut = np.zeros((256, 4), np.uint8)  # translucent class colour; 1 px opaque contour
        lut[fg] = [(*PALETTE[c % len(PALETTE)], 140) for c in fg]
        mi = Image.fromarray(s.mask).resize(img.size, Image.Resampling.NEAREST)
        lo, hi = (np.asarray(mi.filter(f(3))) for f in (MinFilter, MaxFilter))
        rgba = lut[np.asarray(mi)]
        rgba[(lo != hi) & (rgba[..., 3] > 0), 3] = 255
        grey = Image.blend(img, img.convert("L").convert("RGB"), 0.7)  # so class colours stand out
        img.paste(Image.alpha_composite(grey.convert("RGBA"), Image.fromarray(rgba)).convert("RGB"))
        return [_name(ls.get("classes"), c) for c in sorted(set(fg) & set(np.unique(s.mask)))]
    # pose
    kps = [(x * k, y * k, v) for x, y, v in ann["keypoints"]]
    for a, b in ls.get("skeleton", []):
        if 0 <= a < len(kps) and 0 <= b < len(kps) and kps[a][2] > 0 and kps[b][2] > 0:
            draw.line((kps[a][0], kps[a][1], kps[b][0], kps[b][1]), fill=(0, 230, 255), width=lw)
    r = 1 + lw  # visible: filled red dot; labelled but occluded: yellow ring
    for x, y, v in (kp for kp in kps if kp[2] > 0):
        fill, ring = ((255, 40, 40), (255, 255, 255)) if v == 2 else (None, (255, 220, 0))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=ring, width=max(1, lw - 1))
    return [f"{sum(v == 2 for *_, v in kps)} visible", f"{sum(v == 1 for *_, v in kps)} occluded"]


def inspect_task(
    root: Path,
    task: str,
    out: Path,
    *,
    n: int = 16,
    split: str = "train",
    seed: int | None = None,
    annotate: bool = True,
) -> InspectResult:
    """Draw up to `n` samples of `task`/`split` of the shard root into the grid PNG `out`.

    `annotate=False` draws only the images and keys (a plain grid of the same size). ValueError
    names the task if it is unknown, has an undrawable type or no readable sample.
    """
    if n < 1:
        raise ValueError(f"inspect: --n must be >= 1, got {n}")
    tm = load_manifest(Path(root)).task(task)
    if tm.type not in DRAWABLE_TYPES:
        raise ValueError(f"task {task!r}: unknown type {tm.type!r} (know {DRAWABLE_TYPES})")
    samples, skipped = _read(Path(root), tm, split, n, seed)
    if not samples:
        raise ValueError(f"task {task!r} split {split!r}: no readable samples (skipped {skipped})")
    font = _font()
    ims = [Image.fromarray(s.image) for s in samples]
    scales = [_scale(*im.size) for im in ims]
    sizes = [(round(im.width * k), round(im.height * k)) for im, k in zip(ims, scales, strict=True)]
    cw, ih = max(MIN_SHORT, *(w for w, _ in sizes)), max(h for _, h in sizes)
    cols = math.ceil(math.sqrt(len(samples)))
    rows = math.ceil(len(samples) / cols)
    gsize = (cols * cw + (cols + 1) * PAD, rows * (ih + TEXT_H) + (rows + 1) * PAD)
    grid = Image.new("RGB", gsize, BG)
    draw = ImageDraw.Draw(grid)
    shown: set[int] = set()
    for i, (s, im, k, size) in enumerate(zip(samples, ims, scales, sizes, strict=True)):
        x, y = PAD + (i % cols) * (cw + PAD), PAD + (i // cols) * (ih + TEXT_H + PAD)
        img = im.resize(size, Image.Resampling.NEAREST if k >= 1 else Image.Resampling.BILINEAR)
        words = _annotate(img, s, tm, k, font) if annotate else []
        grid.paste(img, (x, y))
        if tm.type == "segmentation" and annotate and s.mask is not None:
            shown |= set(np.unique(s.mask).tolist()) - {255}
        draw.text((x, y + ih + 1), _fit(draw, s.key, font, cw), fill=(255,) * 3, font=font)
        for j, line in enumerate(_wrap(draw, words, font, cw)):
            draw.text((x, y + ih + 1 + (j + 1) * LINE_H), line, fill=(255, 230, 140), font=font)
    ls = tm.label_space
    if entries := [(c, _name(ls.get("classes"), c)) for c in sorted(shown) if not _is_bg(ls, c)]:
        grid = _legend(grid, entries, font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, format="PNG")
    return InspectResult(out, task, tm.type, split, [s.key for s in samples], skipped, grid.size)


def _legend(grid: Image.Image, entries: list[tuple[int, str]], font: Font) -> Image.Image:
    """`grid` with a strip below showing each (class id, name) entry with its colour."""
    places, x, y = [], PAD, 0
    for _c, name in entries:
        w = LINE_H + 16 + int(font.getlength(name))
        if x + w > grid.width - PAD and x > PAD:
            x, y = PAD, y + LINE_H + 2
        places.append((x, y))
        x += w
    out = Image.new("RGB", (grid.width, grid.height + y + LINE_H + PAD), BG)
    out.paste(grid, (0, 0))
    draw = ImageDraw.Draw(out)
    for (c, name), (lx, ly) in zip(entries, places, strict=True):
        box = (lx, grid.height + ly + 1, lx + LINE_H - 2, grid.height + ly + LINE_H - 2)
        draw.rectangle(box, fill=PALETTE[c % len(PALETTE)])
        draw.text((lx + LINE_H + 2, grid.height + ly), name, fill=(255, 255, 255), font=font)
    return out
