"""People in the synthetic world: re-ID/attribute/pose figures and parametric faces.

A person's clothing encodes re-ID identity and attributes; figures are front-facing, so a
keypoint named `left_*` lies on the image's right. Faces encode identity in four strong cues
(hair colour, skin tone, glasses, beard) so a tiny CNN separates 32 identities quickly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from gppf_dist.data.synth.world import Colour, jitter

CLOTHES: tuple[tuple[str, Colour, bool], ...] = (
    # name, colour, is dark
    ("red", (215, 30, 30), False),
    ("yellow", (240, 210, 30), False),
    ("white", (240, 240, 240), False),
    ("green", (40, 170, 60), False),
    ("orange", (245, 135, 20), False),
    ("black", (25, 25, 25), True),
    ("navy", (25, 35, 115), True),
    ("brown", (95, 55, 25), True),
)
SKIN: tuple[Colour, ...] = ((235, 195, 160), (140, 90, 60))
HAIR: tuple[Colour, ...] = ((20, 20, 20), (110, 65, 30), (235, 205, 110), (215, 60, 10))
BAG_COLOUR: Colour = (0, 150, 140)
HAT_COLOUR: Colour = (70, 70, 70)
CAMERA_BACKGROUNDS: tuple[Colour, ...] = (
    (150, 150, 150),
    (120, 140, 175),
    (135, 165, 120),
    (180, 150, 120),
)
CAMERA_GAIN = (1.0, 0.8, 1.1, 0.9)

KEYPOINTS = (
    "head",
    "neck",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
SKELETON = (
    (0, 1),
    (1, 2),
    (1, 3),
    (2, 4),
    (4, 6),
    (3, 5),
    (5, 7),
    (2, 8),
    (3, 9),
    (8, 9),
    (8, 10),
    (10, 12),
    (9, 11),
    (11, 13),
)
ATTRIBUTES = ("upper_red", "upper_dark", "lower_dark", "has_bag", "has_hat", "long_sleeves")


@dataclass(frozen=True)
class Person:
    """Appearance of one person; clothing indexes `CLOTHES`."""

    upper: int
    lower: int
    bag: bool
    hat: bool
    long_sleeves: bool
    skin: int

    def attributes(self) -> list[int]:
        return [
            int(CLOTHES[self.upper][0] == "red"),
            int(CLOTHES[self.upper][2]),
            int(CLOTHES[self.lower][2]),
            int(self.bag),
            int(self.hat),
            int(self.long_sleeves),
        ]


def random_person(rng: np.random.Generator) -> Person:
    return Person(
        upper=int(rng.integers(len(CLOTHES))),
        lower=int(rng.integers(len(CLOTHES))),
        bag=bool(rng.random() < 0.4),
        hat=bool(rng.random() < 0.4),
        long_sleeves=bool(rng.random() < 0.5),
        skin=int(rng.integers(len(SKIN))),
    )


def identity_table(n: int, seed: int) -> list[Person]:
    """`n` persons with pairwise different (upper, lower, bag) clothing."""
    rng = np.random.default_rng([seed, 0x1D])
    combos = [
        (u, lo, b)
        for u in range(len(CLOTHES))
        for lo in range(len(CLOTHES))
        for b in (False, True)
        if u != lo
    ]
    if n > len(combos):
        raise ValueError(f"num_identities must be <= {len(combos)}, got {n}")
    pick = rng.permutation(len(combos))[:n]
    return [
        Person(
            upper=combos[i][0],
            lower=combos[i][1],
            bag=combos[i][2],
            hat=bool(k % 3 == 0),
            long_sleeves=bool(k % 2 == 0),
            skin=int(k % len(SKIN)),
        )
        for k, i in enumerate(pick)
    ]


def person_keypoints(
    x: float, y: float, w: float, h: float, rng: np.random.Generator, spread: float = 1.0
) -> np.ndarray:
    """14x2 keypoints of a front-facing figure in box (x, y, w, h); left is image right."""
    cx = x + w / 2
    kp = np.zeros((14, 2), np.float64)
    kp[0] = (cx, y + 0.09 * h)
    kp[1] = (cx, y + 0.2 * h)
    arm, leg = 0.17 * h, 0.22 * h
    for side, sign in ((0, 1.0), (1, -1.0)):  # 0 = left (image right)
        sh = np.array([cx + sign * 0.28 * w, y + 0.23 * h])
        a1 = math.radians(rng.uniform(10, 60) * spread)
        a2 = a1 + math.radians(rng.uniform(-30, 70) * spread)
        el = sh + arm * np.array([sign * math.sin(a1), math.cos(a1)])
        wr = el + arm * np.array([sign * math.sin(a2), math.cos(a2)])
        hip = np.array([cx + sign * 0.16 * w, y + 0.55 * h])
        b1 = math.radians(rng.uniform(0, 20) * spread)
        b2 = b1 + math.radians(rng.uniform(-15, 10) * spread)
        kn = hip + leg * np.array([sign * math.sin(b1), math.cos(b1)])
        an = kn + leg * np.array([sign * math.sin(b2), math.cos(b2)])
        kp[[2 + side, 4 + side, 6 + side, 8 + side, 10 + side, 12 + side]] = sh, el, wr, hip, kn, an
    return kp


def draw_person(draw: ImageDraw.ImageDraw, p: Person, kp: np.ndarray, h: float) -> None:
    """Draw `p` posed at keypoints `kp` (from `person_keypoints`), figure height `h`."""
    upper, lower, skin = CLOTHES[p.upper][1], CLOTHES[p.lower][1], SKIN[p.skin]
    limb = max(2, round(h * 0.07))
    pt = [tuple(q) for q in kp.tolist()]
    for hip, knee, ankle in ((8, 10, 12), (9, 11, 13)):
        draw.line([pt[hip], pt[knee], pt[ankle]], fill=lower, width=limb + 1, joint="curve")
    draw.polygon([pt[2], pt[3], pt[9], pt[8]], fill=upper)
    for sh, el, wr in ((2, 4, 6), (3, 5, 7)):
        draw.line([pt[sh], pt[el]], fill=upper, width=limb)
        draw.line([pt[el], pt[wr]], fill=upper if p.long_sleeves else skin, width=limb)
    r = h * 0.075
    hx, hy = pt[0]
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=skin)
    if p.hat:
        draw.rectangle([hx - r * 1.2, hy - r * 1.5, hx + r * 1.2, hy - r * 0.4], fill=HAT_COLOUR)
    if p.bag:
        bx, by = pt[9]
        draw.rectangle(
            [bx - h * 0.13, by - h * 0.05, bx - h * 0.02, by + h * 0.08], fill=BAG_COLOUR
        )


def camera_image(camera: int, h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """A plain camera-specific background (re-ID, attributes)."""
    base = np.asarray(jitter(CAMERA_BACKGROUNDS[camera], rng, 10), np.int16)
    img = base + rng.integers(-8, 9, size=(h, w, 1), dtype=np.int16)
    img[int(h * rng.uniform(0.75, 0.9)) :] -= 35  # floor
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def apply_gain(img: Image.Image, gain: float) -> Image.Image:
    if gain == 1.0:
        return img
    arr = np.asarray(img, np.float32) * gain
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def face_params(identity: int) -> tuple[int, int, bool, bool]:
    """(hair, skin, glasses, beard) of face identity `identity` (32 distinct combinations)."""
    return identity % 4, (identity // 4) % 2, bool((identity // 8) % 2), bool((identity // 16) % 2)


def draw_face(identity: int, size: int, rng: np.random.Generator) -> Image.Image:
    """A size x size face of `identity` with random position, scale and lighting."""
    hair_i, skin_i, glasses, beard = face_params(identity)
    bg = np.asarray(jitter((int(rng.integers(60, 200)),) * 3, rng, 40), np.int16)
    arr = bg + rng.integers(-6, 7, size=(size, size, 1), dtype=np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    s = size * rng.uniform(0.85, 1.0)
    cx = size / 2 + rng.uniform(-0.06, 0.06) * size
    cy = size / 2 + rng.uniform(-0.05, 0.05) * size
    hair, skin = jitter(HAIR[hair_i], rng, 8), jitter(SKIN[skin_i], rng, 8)
    fw, fh = 0.34 * s, 0.42 * s
    d.ellipse([cx - fw * 1.15, cy - fh * 1.2, cx + fw * 1.15, cy + fh * 0.35], fill=hair)
    d.ellipse([cx - fw, cy - fh * 0.85, cx + fw, cy + fh], fill=skin)
    d.chord([cx - fw, cy - fh * 0.9, cx + fw, cy + fh * 0.05], 180, 360, fill=hair)  # fringe
    if beard:
        d.chord([cx - fw, cy - fh * 0.2, cx + fw, cy + fh], 0, 180, fill=hair)
    ey, ex, er = cy - fh * 0.15, fw * 0.45, max(1.0, s * 0.035)
    for sx in (-1, 1):
        if glasses:  # dark sunglasses: a strong, large cue
            g = er * 3.2
            box = [cx + sx * ex - g, ey - g * 0.75, cx + sx * ex + g, ey + g * 0.75]
            d.rectangle(box, fill=(10, 10, 10))
        else:
            d.ellipse([cx + sx * ex - er, ey - er, cx + sx * ex + er, ey + er], fill=(20, 20, 20))
    if glasses:
        d.line([cx - ex, ey, cx + ex, ey], fill=(10, 10, 10), width=max(1, round(s * 0.04)))
    my = cy + fh * 0.45
    mouth = max(1, round(s / 24))
    d.line([cx - fw * 0.35, my, cx + fw * 0.35, my], fill=(170, 40, 50), width=mouth)
    return apply_gain(img, float(rng.uniform(0.9, 1.1)))
