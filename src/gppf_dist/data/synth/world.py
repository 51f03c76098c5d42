"""The one procedural world the synthetic corpus is drawn from.

Scenes are background texture families (scene class = colour + pattern), objects are outlined
coloured shapes (object class = shape + colour), persons are blocky figures whose clothing
encodes re-ID identity and attributes, and faces are parametric patterns whose parameters encode
identity. Every task samples this one world, so a backbone that learns scenes, shapes, clothing
colours and body parts helps all of them. Classes differ in colour *and* shape on purpose: a tiny
CNN must learn them in a few hundred steps.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import ImageDraw

Colour = tuple[int, int, int]

SCENES = ("forest", "ocean", "desert", "city", "night")
OBJECTS = ("circle", "square", "triangle", "cross", "diamond")
OBJECT_COLOURS: tuple[Colour, ...] = (
    (225, 35, 35),
    (250, 215, 30),
    (40, 215, 235),
    (235, 60, 225),
    (255, 140, 0),
)
OUTLINE: Colour = (15, 15, 15)


@functools.lru_cache(maxsize=32)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def _texture(scene: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Pattern in [-1, 1] (HxW, or 1xW / Hx1 where it only varies along one axis)."""
    phase = rng.uniform(0, 2 * math.pi)
    freq = rng.uniform(0.35, 0.55)
    if scene == 0:  # forest: vertical stripes
        return np.sin(np.arange(w, dtype=np.float32) * freq + phase)[None, :]
    if scene == 1:  # ocean: horizontal waves
        yy, xx = _grid(h, w)
        return np.sin(yy * freq + 2.0 * np.sin(xx[:1] * 0.15 + phase))
    if scene == 2:  # desert: diagonal dunes, a function of x + y only
        yy, xx = _grid(h, w)
        diag = np.sin(np.arange(h + w, dtype=np.float32) * freq * 0.5 + phase)
        return diag[(yy + xx).astype(np.intp)]
    if scene == 3:  # city: checkerboard
        cell = int(rng.integers(6, 11))
        cols = ((np.arange(w) + int(phase * 3)) // cell) % 2
        rows = (np.arange(h) // cell) % 2
        return ((rows[:, None] ^ cols[None, :]) * 2 - 1).astype(np.float32)
    return np.zeros((1, 1), np.float32)  # night: flat, stars added below


_SCENE_COLOURS = (  # base colour, pattern amplitude
    ((45, 115, 40), (25, 45, 15)),
    ((35, 80, 160), (20, 30, 45)),
    ((195, 165, 110), (25, 25, 20)),
    ((125, 125, 130), (30, 30, 30)),
    ((15, 18, 45), (0, 0, 0)),
)


def scene_background(scene: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 uint8 texture of scene class `scene` (colour and pattern both encode it)."""
    base, amp = _SCENE_COLOURS[scene]
    t = (_texture(scene, h, w, rng) * 64).astype(np.int16)
    img = (t[..., None] * np.asarray(amp, np.int16)) >> 6
    img = img + np.asarray(base, np.int16) + rng.integers(-10, 11, (h, w, 1), dtype=np.int16)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if scene == 4:
        n = max(4, h * w // 150)
        out[rng.integers(0, h, n), rng.integers(0, w, n)] = (235, 235, 200)
    return out


def jitter(colour: Colour, rng: np.random.Generator, amount: int = 18) -> Colour:
    """`colour` with each channel moved by up to `amount`."""
    d = rng.integers(-amount, amount + 1, 3).tolist()
    r, g, b = (min(255, max(0, c + e)) for c, e in zip(colour, d, strict=True))
    return r, g, b


def draw_object(
    draw: ImageDraw.ImageDraw,
    mask_draw: ImageDraw.ImageDraw | None,
    kind: int,
    x0: int,
    y0: int,
    size: int,
    colour: Colour,
) -> list[int]:
    """Draw object class `kind` filling the square at (x0, y0); returns its xyxy box."""
    s1 = size - 1
    cx, cy = x0 + s1 / 2, y0 + s1 / 2
    t = size / 3
    width = max(1, size // 12)
    if kind == 0:
        shape: list[tuple[float, float]] | None = None
        box = [x0, y0, x0 + s1, y0 + s1]
        draw.ellipse(box, fill=colour, outline=OUTLINE, width=width)
        if mask_draw is not None:
            mask_draw.ellipse(box, fill=kind + 1)
    else:
        if kind == 1:
            shape = [(x0, y0), (x0 + s1, y0), (x0 + s1, y0 + s1), (x0, y0 + s1)]
        elif kind == 2:
            shape = [(cx, y0), (x0 + s1, y0 + s1), (x0, y0 + s1)]
        elif kind == 3:
            a, b = x0 + t, x0 + s1 - t
            c, d = y0 + t, y0 + s1 - t
            shape = [
                (a, y0),
                (b, y0),
                (b, c),
                (x0 + s1, c),
                (x0 + s1, d),
                (b, d),
                (b, y0 + s1),
                (a, y0 + s1),
                (a, d),
                (x0, d),
                (x0, c),
                (a, c),
            ]
        else:
            shape = [(cx, y0), (x0 + s1, cy), (cx, y0 + s1), (x0, cy)]
        draw.polygon(shape, fill=colour, outline=OUTLINE, width=width)
        if mask_draw is not None:
            mask_draw.polygon(shape, fill=kind + 1)
    return [x0, y0, x0 + size, y0 + size]
