"""Drawing primitives for `gppf-shards inspect` (`TaskType.draw`): boxes, mask overlays,
keypoints and skeletons on one grid cell, in source-pixel coordinates. Pillow only.

A class's colour is `PALETTE[class id % len(PALETTE)]`; classes a mask overlay showed are
collected in `Canvas.legend`, which the grid lists below its cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.ImageFilter import MaxFilter, MinFilter

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
LINE_H = 15
"""Height in pixels of one line of text (a caption line, a box's class name)."""
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip
IGNORE_ID = 255
"""A mask pixel that belongs to no class."""


def class_colour(c: int) -> tuple[int, int, int]:
    return PALETTE[c % len(PALETTE)]


def label_name(names: Any, i: int) -> str:
    """`names[i]`, or `i` itself when `names` is not a list holding it."""
    return str(names[i]) if isinstance(names, list) and 0 <= i < len(names) else str(i)


def is_background(label_space: dict[str, Any], c: int) -> bool:
    return label_name(label_space.get("classes"), c).lower() == "background"


@dataclass
class Canvas:
    """One cell's image, `scale` times the source's size, to draw a sample's annotation on."""

    image: Image.Image
    scale: float
    font: Font
    legend: dict[int, str] = field(default_factory=dict)
    """Class id -> name of the classes the drawing coloured, for the grid's legend."""

    @property
    def line_width(self) -> int:
        return max(1, round(self.scale))

    def box(self, box: list[float], colour: tuple[int, int, int], name: str) -> None:
        """Outline source box [x1, y1, x2, y2] in `colour`, `name` on a tag above (or inside)."""
        draw, lw = ImageDraw.Draw(self.image), self.line_width
        x1, y1, x2, y2 = (v * self.scale for v in box)
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=colour, width=lw)
        ty = y1 - LINE_H if y1 >= LINE_H else y1 + lw  # the tag above the box, or inside
        draw.rectangle((x1, ty, x1 + self.font.getlength(name) + 3, ty + LINE_H - 1), fill=colour)
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        draw.text((x1 + 2, ty), name, fill=ink, font=self.font)

    def mask(self, mask: np.ndarray, label_space: dict[str, Any]) -> list[str]:
        """Overlay class-id `mask` (source size) in translucent class colours with opaque
        contours on a greyed image; return the names of the classes shown (no background)."""
        names = label_space.get("classes", [])
        fg = [c for c in range(len(names)) if not is_background(label_space, c)]
        lut = np.zeros((256, 4), np.uint8)  # translucent class colour; 1 px opaque contour
        lut[fg] = [(*class_colour(c), 140) for c in fg]
        mi = Image.fromarray(mask).resize(self.image.size, Image.Resampling.NEAREST)
        lo, hi = (np.asarray(mi.filter(f(3))) for f in (MinFilter, MaxFilter))
        rgba = lut[np.asarray(mi)]
        rgba[(lo != hi) & (rgba[..., 3] > 0), 3] = 255
        img = self.image
        grey = Image.blend(img, img.convert("L").convert("RGB"), 0.7)  # class colours stand out
        img.paste(Image.alpha_composite(grey.convert("RGBA"), Image.fromarray(rgba)).convert("RGB"))
        present = set(np.unique(mask).tolist()) - {IGNORE_ID}
        for c in present:
            if not is_background(label_space, c):
                self.legend[c] = label_name(names, c)
        return [label_name(names, c) for c in sorted(set(fg) & present)]

    def keypoints(self, keypoints: list[list[float]], skeleton: list[list[int]]) -> None:
        """Source [x, y, v] keypoints: visible (v=2) a filled red dot, occluded (v=1) a yellow
        ring, unlabelled (v=0) nothing; `skeleton` edges [a, b] between labelled ones."""
        draw, lw = ImageDraw.Draw(self.image), self.line_width
        kps = [(x * self.scale, y * self.scale, v) for x, y, v in keypoints]
        for a, b in skeleton:
            if 0 <= a < len(kps) and 0 <= b < len(kps) and kps[a][2] > 0 and kps[b][2] > 0:
                draw.line(
                    (kps[a][0], kps[a][1], kps[b][0], kps[b][1]), fill=(0, 230, 255), width=lw
                )
        r = 1 + lw
        for x, y, v in (kp for kp in kps if kp[2] > 0):
            fill, ring = ((255, 40, 40), (255, 255, 255)) if v == 2 else (None, (255, 220, 0))
            draw.ellipse(
                (x - r, y - r, x + r, y + r), fill=fill, outline=ring, width=max(1, lw - 1)
            )
