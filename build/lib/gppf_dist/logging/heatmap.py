"""Lego usage (task × layer × lego gate weights) rendered as a labelled RGB heatmap image.

Layout: a title; one row per task (labelled with its name); one block of `N` cells per lego layer
(labelled `L0`, `L1`, ... above); each cell is one
lego coloured by its gate weight on a perceptual (viridis-like) scale, with unselected legos
(weight 0) drawn as light-grey hatched cells; a colour bar on the right is the legend for the gate
weight (0 → 1) and the "unused" swatch. Plain numpy + Pillow; the result is an HxWx3 uint8 array,
ready for `wandb.Image`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 14
LAYER_GAP = 6
PAD = 8
BAR_W, BAR_H = 14, 120
UNUSED = (225, 225, 225)
HATCH = (185, 185, 185)
INK = (20, 20, 20)
# viridis sampled at 0, .25, .5, .75, 1 (linearly interpolated in between)
_STOPS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def colormap(value: float) -> tuple[int, int, int]:
    """RGB for a gate weight in [0, 1] (clipped)."""
    v = float(np.clip(value, 0.0, 1.0)) * (len(_STOPS) - 1)
    lo = min(int(v), len(_STOPS) - 2)
    rgb = _STOPS[lo] + (v - lo) * (_STOPS[lo + 1] - _STOPS[lo])
    return (int(round(rgb[0])), int(round(rgb[1])), int(round(rgb[2])))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def cell_origin(
    task: int, layer: int, lego_id: int, num_legos: int, left: int, top: int
) -> tuple[int, int]:
    """Top-left pixel of a cell (for tests and callers that annotate the image)."""
    x = left + layer * (num_legos * CELL + LAYER_GAP) + lego_id * CELL
    return x, top + task * CELL


def render_usage(
    usage: np.ndarray, task_names: list[str], title: str = "Lego usage per task"
) -> np.ndarray:
    """usage: [tasks, layers, legos] gate weights in [0, 1] → HxWx3 uint8 labelled heatmap."""
    usage = np.asarray(usage, dtype=np.float64)
    if usage.ndim != 3 or min(usage.shape) < 1:
        raise ValueError(f"`usage.shape`={usage.shape} must be [tasks, layers, legos], non-empty")
    num_tasks, num_layers, num_legos = usage.shape
    if len(task_names) != num_tasks:
        raise ValueError(f"`task_names`={task_names!r} must name all {num_tasks} tasks")
    usage = np.nan_to_num(usage, nan=0.0)
    font, small = _font(12), _font(10)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(n, font=font)) for n in task_names) + 2 * PAD
    left, top = label_w, PAD + 18 + 16
    grid_w = num_layers * (num_legos * CELL + LAYER_GAP) - LAYER_GAP
    bar_x = left + grid_w + 3 * PAD
    width = bar_x + BAR_W + 70
    height = max(top + num_tasks * CELL + PAD, top + BAR_H + 40)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((PAD, PAD), f"{title}  ({num_legos} legos per layer)", fill=INK, font=font)
    for layer in range(num_layers):
        x, _ = cell_origin(0, layer, 0, num_legos, left, top)
        draw.text((x, top - 14), f"L{layer}", fill=INK, font=small)
    for t, name in enumerate(task_names):
        draw.text((PAD, top + t * CELL + 1), name, fill=INK, font=font)
        for layer in range(num_layers):
            for i in range(num_legos):
                x, y = cell_origin(t, layer, i, num_legos, left, top)
                box = [x, y, x + CELL - 2, y + CELL - 2]
                v = usage[t, layer, i]
                if v > 0:
                    draw.rectangle(box, fill=colormap(v))
                else:
                    draw.rectangle(box, fill=UNUSED)
                    draw.line([x, y + CELL - 2, x + CELL - 2, y], fill=HATCH)
    # legend: vertical colour bar (1 at the top), ticks, and the "unused" swatch
    for j in range(BAR_H):
        draw.line([bar_x, top + j, bar_x + BAR_W, top + j], fill=colormap(1 - j / (BAR_H - 1)))
    draw.rectangle([bar_x - 1, top - 1, bar_x + BAR_W + 1, top + BAR_H], outline=INK)
    for value in (0.0, 0.5, 1.0):
        y = top + round((1 - value) * (BAR_H - 1))
        draw.line([bar_x + BAR_W, y, bar_x + BAR_W + 3, y], fill=INK)
        draw.text((bar_x + BAR_W + 6, y - 6), f"{value:.1f}", fill=INK, font=small)
    draw.text((bar_x - 4, top - 14), "gate", fill=INK, font=small)
    sy = top + BAR_H + 10
    draw.rectangle([bar_x, sy, bar_x + BAR_W, sy + CELL - 2], fill=UNUSED, outline=HATCH)
    draw.text((bar_x + BAR_W + 6, sy), "unused", fill=INK, font=small)
    return np.asarray(img, dtype=np.uint8).copy()
