"""The synthetic corpus: all 8 tasks of the reference composition, drawn from one world.

`write_synthetic_corpus(out)` writes `<out>/<task>/<split>/synth-NNNNNN.tar` plus the manifest.
Every sample gets its own RNG seeded from (seed, task, split, index), so the corpus is
byte-identical for a seed, and any sample can be regenerated on its own.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gppf_dist.data.format.manifest import Manifest, TaskManifest, save_manifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.data.load.streams import task_seed
from gppf_dist.data.synth import people
from gppf_dist.data.synth import world as w

NUM_REID_IDS = 32
NUM_FACE_IDS = 32
NUM_CAMERAS = len(people.CAMERA_BACKGROUNDS)
JPEG_QUALITY = 90
DATASET = "synth"

Members = dict[str, bytes]


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _png(mask: Image.Image) -> bytes:
    buf = io.BytesIO()
    mask.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def json_bytes(ann: dict[str, Any]) -> bytes:
    return json.dumps(ann, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _place(
    rng: np.random.Generator, w_: int, h: int, size: int, taken: list[list[int]]
) -> tuple[int, int]:
    """A top-left corner for a size x size object overlapping `taken` boxes little."""
    x = y = 0
    for _ in range(12):
        x, y = int(rng.integers(0, w_ - size + 1)), int(rng.integers(0, h - size + 1))
        if all(_iou([x, y, x + size, y + size], b) < 0.15 for b in taken):
            break
    return x, y


def _iou(a: list[int], b: list[int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _objects(
    rng: np.random.Generator,
    h: int,
    w_: int,
    count: int,
    smin: int,
    smax: int,
    with_mask: bool,
    scene: int | None = None,
) -> tuple[Image.Image, Image.Image | None, list[list[int]], list[int]]:
    scene = int(rng.integers(len(w.SCENES))) if scene is None else scene
    img = Image.fromarray(w.scene_background(scene, h, w_, rng), "RGB")
    mask = Image.new("L", (w_, h), 0) if with_mask else None
    draw, mdraw = ImageDraw.Draw(img), (ImageDraw.Draw(mask) if mask is not None else None)
    boxes: list[list[int]] = []
    labels: list[int] = []
    for _ in range(count):
        kind = int(rng.integers(len(w.OBJECTS)))
        size = int(rng.integers(smin, smax + 1))
        x, y = _place(rng, w_, h, size, boxes)
        colour = w.jitter(w.OBJECT_COLOURS[kind], rng)
        boxes.append(w.draw_object(draw, mdraw, kind, x, y, size, colour))
        labels.append(kind)
    return img, mask, boxes, labels


def gen_cls_object(rng: np.random.Generator) -> Members:
    img, _, _, labels = _objects(rng, 64, 64, 1, 24, 44, False)
    ann = {"label": labels[0], "width": 64, "height": 64}
    return {"jpg": jpeg_bytes(img), "json": json_bytes(ann), "cls": str(labels[0]).encode()}


def gen_cls_scene(rng: np.random.Generator) -> Members:
    scene = int(rng.integers(len(w.SCENES)))
    img, _, _, _ = _objects(rng, 64, 64, int(rng.integers(0, 3)), 8, 14, False, scene)
    ann = {"label": scene, "width": 64, "height": 64}
    return {"jpg": jpeg_bytes(img), "json": json_bytes(ann), "cls": str(scene).encode()}


def gen_det(rng: np.random.Generator) -> Members:
    img, _, boxes, labels = _objects(rng, 96, 96, int(rng.integers(1, 5)), 14, 36, False)
    ann = {"boxes": boxes, "labels": labels, "width": 96, "height": 96}
    return {"jpg": jpeg_bytes(img), "json": json_bytes(ann)}


def gen_seg(rng: np.random.Generator) -> Members:
    img, mask, _, _ = _objects(rng, 64, 64, int(rng.integers(1, 4)), 14, 30, True)
    assert mask is not None
    return {
        "jpg": jpeg_bytes(img),
        "json": json_bytes({"width": 64, "height": 64}),
        "png": _png(mask),
    }


def _person_image(
    rng: np.random.Generator, person: people.Person, bg: Image.Image, scale: float, spread: float
) -> tuple[Image.Image, np.ndarray, float]:
    width, height = bg.size
    ph = height * scale
    pw = min(width, ph * 0.5)
    x = (width - pw) / 2 + rng.uniform(-0.08, 0.08) * width
    y = (height - ph) / 2 + rng.uniform(-0.05, 0.05) * height
    kp = people.person_keypoints(x, y, pw, ph, rng, spread)
    people.draw_person(ImageDraw.Draw(bg), person, kp, ph)
    return bg, kp, ph


def gen_pose(rng: np.random.Generator) -> Members:
    h, wd = 64, 48
    bg = Image.fromarray(w.scene_background(int(rng.integers(len(w.SCENES))), h, wd, rng), "RGB")
    scale = float(rng.uniform(0.7, 0.95))
    img, kp, ph = _person_image(rng, people.random_person(rng), bg, scale, spread=1.6)
    vis = np.full(len(kp), 2)
    if rng.random() < 0.25:  # an occluder over the lower legs marks keypoints "labelled, hidden"
        oy = float(rng.uniform(0.7, 0.85)) * h
        ImageDraw.Draw(img).rectangle([0, oy, wd, h], fill=w.jitter((90, 90, 90), rng))
        vis[kp[:, 1] >= oy] = 1
    outside = (kp[:, 0] < 0) | (kp[:, 0] >= wd) | (kp[:, 1] < 0) | (kp[:, 1] >= h)
    vis[outside] = 0
    inside = kp[~outside]
    r = ph * 0.09
    box = [
        max(0.0, inside[:, 0].min() - r),
        max(0.0, inside[:, 1].min() - 1.5 * r),
        min(float(wd), inside[:, 0].max() + r),
        min(float(h), inside[:, 1].max() + r),
    ]
    keypoints = [
        [round(float(x), 2), round(float(y), 2), int(v)] if v else [0, 0, 0]
        for (x, y), v in zip(kp, vis, strict=True)
    ]
    ann = {"keypoints": keypoints, "box": [round(b, 2) for b in box], "width": wd, "height": h}
    return {"jpg": jpeg_bytes(img), "json": json_bytes(ann)}


def _camera_person(rng: np.random.Generator, person: people.Person, camera: int) -> Image.Image:
    bg = people.camera_image(camera, 64, 32, rng)
    img, _, _ = _person_image(rng, person, bg, float(rng.uniform(0.85, 0.95)), spread=0.6)
    return people.apply_gain(img, people.CAMERA_GAIN[camera] * float(rng.uniform(0.95, 1.05)))


@dataclass(frozen=True)
class _Ids:
    reid: list[people.Person]


def gen_reid(rng: np.random.Generator, index: int, ids: _Ids) -> Members:
    identity = index % NUM_REID_IDS
    camera = int(rng.integers(NUM_CAMERAS))
    img = _camera_person(rng, ids.reid[identity], camera)
    ann = {"identity": identity, "camera": camera, "width": 32, "height": 64}
    return {"jpg": jpeg_bytes(img), "json": json_bytes(ann)}


def gen_attr(rng: np.random.Generator) -> Members:
    person = people.random_person(rng)
    img = _camera_person(rng, person, int(rng.integers(NUM_CAMERAS)))
    ann = {"attributes": person.attributes(), "width": 32, "height": 64}
    return {"jpg": jpeg_bytes(img), "json": json_bytes(ann)}


def gen_face(rng: np.random.Generator, index: int) -> Members:
    identity = index % NUM_FACE_IDS
    ann = {"identity": identity, "width": 48, "height": 48}
    return {"jpg": jpeg_bytes(people.draw_face(identity, 48, rng)), "json": json_bytes(ann)}


@dataclass(frozen=True)
class SynthTask:
    name: str
    type: str
    label_space: dict[str, Any]
    generate: Callable[[np.random.Generator, int, _Ids], Members]


SYNTH_TASKS: tuple[SynthTask, ...] = (
    SynthTask(
        "cls_object",
        "classification",
        {"classes": list(w.OBJECTS)},
        lambda r, i, ids: gen_cls_object(r),
    ),
    SynthTask(
        "cls_scene",
        "classification",
        {"classes": list(w.SCENES)},
        lambda r, i, ids: gen_cls_scene(r),
    ),
    SynthTask("det", "detection", {"classes": list(w.OBJECTS)}, lambda r, i, ids: gen_det(r)),
    SynthTask(
        "seg", "segmentation", {"classes": ["background", *w.OBJECTS]}, lambda r, i, ids: gen_seg(r)
    ),
    SynthTask(
        "pose",
        "pose",
        {"keypoints": list(people.KEYPOINTS), "skeleton": [list(e) for e in people.SKELETON]},
        lambda r, i, ids: gen_pose(r),
    ),
    SynthTask("reid", "reid", {"num_identities": NUM_REID_IDS}, gen_reid),
    SynthTask("face", "face", {"num_identities": NUM_FACE_IDS}, lambda r, i, ids: gen_face(r, i)),
    SynthTask(
        "attr", "attributes", {"attributes": list(people.ATTRIBUTES)}, lambda r, i, ids: gen_attr(r)
    ),
)
"""The reference composition (name, type, label space, generator)."""

_SPLIT_CODE = {"train": 0, "val": 1}


def generate_sample(task: SynthTask, split: str, index: int, seed: int) -> Members:
    """The members of sample `index` of `task`/`split` (pure function of its arguments)."""
    rng = np.random.default_rng([seed, task_seed(task.name), _SPLIT_CODE[split], index])
    return task.generate(rng, index, _Ids(reid=people.identity_table(NUM_REID_IDS, seed)))


def write_synthetic_corpus(
    out: Path,
    *,
    samples_per_task: int = 512,
    val_per_task: int = 128,
    seed: int = 0,
    samples_per_shard: int = 64,
    tasks: list[str] | None = None,
) -> Manifest:
    """Write the corpus (all 8 tasks unless `tasks` names some) and its manifest under `out`."""
    for key, value in (("samples_per_task", samples_per_task), ("val_per_task", val_per_task)):
        if value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    known = {t.name: t for t in SYNTH_TASKS}
    chosen = list(known) if tasks is None else tasks
    for name in chosen:
        if name not in known:
            raise ValueError(f"unknown synthetic task {name!r} (known: {sorted(known)})")
    out = Path(out)
    ids = _Ids(reid=people.identity_table(NUM_REID_IDS, seed))
    manifest = Manifest()
    for name in chosen:
        task = known[name]
        tm = TaskManifest(name, task.type, DATASET, task.label_space, {})
        for split, count in (("train", samples_per_task), ("val", val_per_task)):
            for stale in (out / name / split).glob(f"{DATASET}-*.tar"):
                stale.unlink()
            with ShardWriter(out, name, split, DATASET, samples_per_shard) as writer:
                for i in range(count):
                    rng = np.random.default_rng([seed, task_seed(name), _SPLIT_CODE[split], i])
                    writer.write(f"{name}_{split}_{i:07d}", task.generate(rng, i, ids))
            tm.splits[split] = writer.close()
        manifest.tasks[name] = tm
    save_manifest(out, manifest)
    return manifest
