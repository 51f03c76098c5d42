"""The synthetic downstream suite: VTAB-like classification tasks the corpus never trains on.

`write_downstream_suite(out)` writes `<out>/<task>/{train,val}/synth-NNNNNN.tar` plus the
manifest: 1,000 training examples per task (`train`) and a fixed test set (`val`, which the
evaluation reads). The images come from the pre-training world (`synth_world`: its scene
backgrounds and object shapes), but every label is something pre-training never asks for:

natural-like
- `dtd_like`: which texture pattern, recoloured with a random colour pair (cls_scene's classes
  are colour *and* pattern; here only the pattern, plus a ring pattern the world lacks);
- `fine_objects`: shape x colour among the world's shapes in two colours it never uses;
structured
- `count`: how many objects (1-6); `grid_pos`: which cell of a 3x3 grid holds the object;
- `orient`: the angle of an elongated bar (6 bins of 30 degrees); `size_bin`: object size (4 bins).

Every sample has its own RNG from (seed, task, split, index); labels are dealt in blocks of one
of each class in a seeded shuffled order, so every shard (a whole number of blocks) is exactly
class-balanced and the order is not sorted. Same seed, byte-identical tars.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gppf_dist.data.format.manifest import Manifest, ShardInfo, TaskManifest, save_manifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.data.load.streams import task_seed
from gppf_dist.data.synth import world as w
from gppf_dist.data.synth.corpus import DATASET, Members, jpeg_bytes, json_bytes

SIZE = 64
"""Every downstream image is SIZE x SIZE pixels."""
TEXTURES = ("stripes", "waves", "dunes", "checks", "dots", "rings")
NEW_COLOURS: tuple[tuple[str, w.Colour], ...] = (("green", (45, 185, 65)), ("blue", (50, 80, 225)))
"""Object colours the pre-training world never draws objects in."""
GRID_CELLS = tuple(f"{row}_{col}" for row in ("top", "middle", "bottom") for col in "lcr")
ANGLES = tuple(range(0, 180, 30))
SIZE_BINS = ((8, 12), (16, 21), (25, 31), (35, 42))
MAX_COUNT = 6

_SPLIT_CODE = {"train": 0, "val": 1}
_LABEL_TAG = 0x1ABE1
"""Last seed word of the label-dealing RNG, so it never equals a sample's RNG."""

Generate = Callable[[np.random.Generator, int], Image.Image]


def _background(rng: np.random.Generator) -> Image.Image:
    scene = int(rng.integers(len(w.SCENES)))
    return Image.fromarray(w.scene_background(scene, SIZE, SIZE, rng), "RGB")


def _world_colour(rng: np.random.Generator) -> w.Colour:
    return w.jitter(w.OBJECT_COLOURS[int(rng.integers(len(w.OBJECT_COLOURS)))], rng)


def _rings(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cy, cx = rng.uniform(0, SIZE, 2)
    pattern = np.sin(np.hypot(yy - cy, xx - cx) * rng.uniform(0.5, 0.8) + rng.uniform(0, 6.3))
    return pattern + rng.normal(0, 0.15, (SIZE, SIZE)).astype(np.float32)


def gen_texture(rng: np.random.Generator, label: int) -> Image.Image:
    """Texture `label`: a scene pattern (or rings) mapped onto a random dark/light colour pair."""
    if label < len(w.SCENES):
        lum = w.scene_background(label, SIZE, SIZE, rng).astype(np.float32).mean(-1)
    else:
        lum = _rings(rng)
    lum = (lum - lum.min()) / max(float(lum.max() - lum.min()), 1e-6)
    dark, light = rng.integers(0, 110, 3), rng.integers(145, 256, 3)
    if rng.random() < 0.5:
        dark, light = light, dark
    rgb = dark + lum[..., None] * (light - dark).astype(np.float32)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def gen_fine_object(rng: np.random.Generator, label: int) -> Image.Image:
    """One of the world's shapes (label // 2) in a colour it never has (label % 2)."""
    img = _background(rng)
    size = int(rng.integers(24, 45))
    x, y = (int(v) for v in rng.integers(0, SIZE - size + 1, 2))
    colour = w.jitter(NEW_COLOURS[label % len(NEW_COLOURS)][1], rng, 12)
    w.draw_object(ImageDraw.Draw(img), None, label // len(NEW_COLOURS), x, y, size, colour)
    return img


def gen_count(rng: np.random.Generator, label: int) -> Image.Image:
    """`label + 1` small objects, one per distinct cell of a 4x4 grid (never overlapping)."""
    img, cell = _background(rng), SIZE // 4
    draw = ImageDraw.Draw(img)
    for c in rng.choice(16, label + 1, replace=False):
        size = int(rng.integers(9, 14))
        x = int(c % 4) * cell + int(rng.integers(0, cell - size + 1))
        y = int(c // 4) * cell + int(rng.integers(0, cell - size + 1))
        w.draw_object(draw, None, int(rng.integers(len(w.OBJECTS))), x, y, size, _world_colour(rng))
    return img


def gen_grid_pos(rng: np.random.Generator, label: int) -> Image.Image:
    """One object wholly inside cell `label` (row-major) of a 3x3 grid."""
    img = _background(rng)
    size = int(rng.integers(10, 17))
    bounds = [(i * SIZE // 3, (i + 1) * SIZE // 3) for i in range(3)]
    (x0, x1), (y0, y1) = bounds[label % 3], bounds[label // 3]
    x, y = int(rng.integers(x0, x1 - size + 1)), int(rng.integers(y0, y1 - size + 1))
    kind = int(rng.integers(len(w.OBJECTS)))
    w.draw_object(ImageDraw.Draw(img), None, kind, x, y, size, _world_colour(rng))
    return img


def gen_orient(rng: np.random.Generator, label: int) -> Image.Image:
    """A bar at ANGLES[label] degrees (jittered by up to 6), random length, width and colour."""
    img = _background(rng)
    theta = math.radians(ANGLES[label] + rng.uniform(-6, 6))
    half_len, half_wid = rng.uniform(17, 25), rng.uniform(3, 5)
    cx, cy = SIZE / 2 + rng.uniform(-6, 6, 2)
    ux, uy = math.cos(theta), -math.sin(theta)  # image y points down
    corners = [
        (cx + a * half_len * ux - b * half_wid * uy, cy + a * half_len * uy + b * half_wid * ux)
        for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))
    ]
    ImageDraw.Draw(img).polygon(corners, fill=_world_colour(rng), outline=w.OUTLINE, width=1)
    return img


def gen_size_bin(rng: np.random.Generator, label: int) -> Image.Image:
    """One object whose side lies in SIZE_BINS[label], anywhere in the image."""
    img = _background(rng)
    lo, hi = SIZE_BINS[label]
    size = int(rng.integers(lo, hi + 1))
    x, y = (int(v) for v in rng.integers(0, SIZE - size + 1, 2))
    kind = int(rng.integers(len(w.OBJECTS)))
    w.draw_object(ImageDraw.Draw(img), None, kind, x, y, size, _world_colour(rng))
    return img


@dataclass(frozen=True)
class DownstreamTask:
    name: str
    kind: str
    """"natural" or "structured" (VTAB's groups; documentation only)."""
    classes: tuple[str, ...]
    generate: Generate


DOWNSTREAM_TASKS: tuple[DownstreamTask, ...] = (
    DownstreamTask("dtd_like", "natural", TEXTURES, gen_texture),
    DownstreamTask(
        "fine_objects",
        "natural",
        tuple(f"{o}_{c}" for o in w.OBJECTS for c, _ in NEW_COLOURS),
        gen_fine_object,
    ),
    DownstreamTask("count", "structured", tuple(str(n) for n in range(1, 7)), gen_count),
    DownstreamTask("grid_pos", "structured", GRID_CELLS, gen_grid_pos),
    DownstreamTask("orient", "structured", tuple(f"deg{a:03d}" for a in ANGLES), gen_orient),
    DownstreamTask("size_bin", "structured", ("xs", "s", "m", "l"), gen_size_bin),
)
"""The suite (all classification); no name is a pre-training task's."""


def sample_label(task: DownstreamTask, split: str, index: int, seed: int) -> int:
    """Class of sample `index`: position index % C of block index // C, a seeded permutation."""
    num = len(task.classes)
    rng = np.random.default_rng(
        [seed, task_seed(task.name), _SPLIT_CODE[split], index // num, _LABEL_TAG]
    )
    return int(rng.permutation(num)[index % num])


def generate_downstream(task: DownstreamTask, split: str, index: int, seed: int) -> Members:
    """The members (jpg, json, cls) of sample `index` of `task`/`split` (a pure function)."""
    label = sample_label(task, split, index, seed)
    rng = np.random.default_rng([seed, task_seed(task.name), _SPLIT_CODE[split], index])
    img = task.generate(rng, label)
    ann = {"label": label, "width": SIZE, "height": SIZE}
    return {"jpg": jpeg_bytes(img), "json": json_bytes(ann), "cls": str(label).encode()}


def _write_split(
    out: Path, task: DownstreamTask, split: str, count: int, seed: int, per_shard: int
) -> list[ShardInfo]:
    """Write `count` samples of `task`/`split` into fresh shards of `per_shard` samples."""
    for stale in (out / task.name / split).glob(f"{DATASET}-*.tar"):
        stale.unlink()
    with ShardWriter(out, task.name, split, DATASET, per_shard) as writer:
        for i in range(count):
            key = f"{task.name}_{split}_{i:07d}"
            writer.write(key, generate_downstream(task, split, i, seed))
    return writer.close()


def write_downstream_suite(
    out: Path,
    *,
    train_per_task: int = 1000,
    test_per_task: int = 500,
    seed: int = 0,
    samples_per_shard: int = 64,
    tasks: list[str] | None = None,
) -> Manifest:
    """Write the suite (every task unless `tasks` names some) and its manifest under `out`.

    A task's shards hold `samples_per_shard` rounded down to whole blocks of its classes."""
    counts = {"train": train_per_task, "val": test_per_task}
    if min(counts.values()) < 0:
        raise ValueError(f"train_per_task and test_per_task must be >= 0, got {counts}")
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    known = {t.name: t for t in DOWNSTREAM_TASKS}
    chosen = list(known) if tasks is None else tasks
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(f"unknown downstream task(s) {unknown} (known: {sorted(known)})")
    manifest = Manifest()
    for name in chosen:
        task = known[name]
        per_shard = len(task.classes) * max(1, samples_per_shard // len(task.classes))
        splits = {
            split: _write_split(Path(out), task, split, count, seed, per_shard)
            for split, count in counts.items()
        }
        label_space = {"classes": list(task.classes)}
        manifest.tasks[name] = TaskManifest(name, "classification", DATASET, label_space, splits)
    save_manifest(Path(out), manifest)
    return manifest
