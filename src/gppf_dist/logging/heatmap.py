"""Lego usage (task x layer x lego gate weights) rendered as an RGB heatmap image.

Rows are tasks; each lego layer is a block of N columns. Brighter = larger gate weight; unused
legos are black. Plain numpy + Pillow, so it works without a plotting stack.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CELL = 14
LABEL_W = 90


def render_usage(usage: np.ndarray, task_names: list[str]) -> np.ndarray:
    """usage: [tasks, layers, legos] in [0, 1] -> HxWx3 uint8."""
    num_tasks, num_layers, num_legos = usage.shape
    gap = 4
    width = LABEL_W + num_layers * (num_legos * CELL + gap)
    height = num_tasks * CELL + 16
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for layer in range(num_layers):
        x0 = LABEL_W + layer * (num_legos * CELL + gap)
        draw.text((x0, 2), f"L{layer}", fill=(0, 0, 0))
        for t in range(num_tasks):
            for i in range(num_legos):
                v = float(np.clip(usage[t, layer, i], 0.0, 1.0))
                color = (int(255 * v), int(120 * v), int(40 + 200 * (1 - v)) if v > 0 else 0)
                x, y = x0 + i * CELL, 16 + t * CELL
                draw.rectangle([x, y, x + CELL - 2, y + CELL - 2], fill=color)
    for t, name in enumerate(task_names):
        draw.text((2, 16 + t * CELL), name[:14], fill=(0, 0, 0))
    return np.asarray(img)
