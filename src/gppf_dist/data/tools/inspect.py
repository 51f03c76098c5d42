"""`gppf-shards inspect`: draw samples of one task with their annotations into one grid PNG.

Samples come from the safe shard reader and must pass their type's schema check (bad ones are
skipped and counted). Small images are upscaled (nearest, integer factor) to >= `MIN_SHORT` px on
the short side; each cell shows the image with what its task type draws (`TaskType.draw`: boxes,
mask overlay, keypoints + skeleton...), its key and up to `TEXT_LINES` lines of the type's caption
(class, identity, attributes...). Classes a mask overlay coloured are listed below the grid.
Pillow only.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from gppf_dist.data.decode.sample import SampleError, decode_sample, read_shard
from gppf_dist.data.format.manifest import TaskManifest, load_manifest
from gppf_dist.data.format.schema import check_annotation, check_mask
from gppf_dist.tasks.base import Sample, TaskType
from gppf_dist.tasks.common.drawing import LINE_H, PALETTE, Canvas, Font
from gppf_dist.tasks.registry import get_task_type

MIN_SHORT = 128
MAX_LONG = 320
TEXT_LINES = 3  # annotation text lines below each cell's key line; more is cut with '…'
TEXT_H = (1 + TEXT_LINES) * LINE_H
PAD = 6
BG = (24, 24, 24)

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


def _read(
    root: Path, tm: TaskManifest, task_type: TaskType, split: str, n: int, seed: int | None
) -> _Picked:
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
                sample = decode_sample(raw, needs_mask=task_type.needs_mask)
                h, w = sample.image.shape[:2]
                check_annotation(tm.type, raw.key, sample.ann, tm.label_space, w, h, split)
                check_mask(tm.type, raw.key, sample.mask, tm.label_space)
            except SampleError as exc:
                skipped[exc.reason] += 1
                continue
            samples.append(sample)
    return samples, dict(skipped)


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
    names the task if it is unknown, has an unknown type or no readable sample.
    """
    if n < 1:
        raise ValueError(f"inspect: --n must be >= 1, got {n}")
    tm = load_manifest(Path(root)).task(task)
    try:
        task_type = get_task_type(tm.type)
    except ValueError as err:
        raise ValueError(f"task {task!r}: {err}") from err
    samples, skipped = _read(Path(root), tm, task_type, split, n, seed)
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
    legend: dict[int, str] = {}  # class id -> name, of the classes the drawings coloured
    for i, (s, im, k, size) in enumerate(zip(samples, ims, scales, sizes, strict=True)):
        x, y = PAD + (i % cols) * (cw + PAD), PAD + (i // cols) * (ih + TEXT_H + PAD)
        img = im.resize(size, Image.Resampling.NEAREST if k >= 1 else Image.Resampling.BILINEAR)
        words: list[str] = []
        if annotate:
            canvas = Canvas(img, k, font)
            words = task_type.draw(canvas, s, tm.label_space)
            legend.update(canvas.legend)
        grid.paste(img, (x, y))
        draw.text((x, y + ih + 1), _fit(draw, s.key, font, cw), fill=(255,) * 3, font=font)
        for j, line in enumerate(_wrap(draw, words, font, cw)):
            draw.text((x, y + ih + 1 + (j + 1) * LINE_H), line, fill=(255, 230, 140), font=font)
    if legend:
        grid = _legend(grid, sorted(legend.items()), font)
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
