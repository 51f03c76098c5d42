"""`gppf-bench decode`: images/s per core of our decode + augment path against the Pillow path.

Both paths turn the same raw samples into training inputs in one process on one core:
`decode_sample` then the task type's `prepare` (train augmentation). Ours decodes JPEGs with
libjpeg-turbo, reduced in the DCT domain where the task's window allows (`data.jpeg`); the Pillow
path decodes every image with Pillow at full size (`decoder="pillow"`, the path before
libjpeg-turbo). The images are generated, real-size JPEGs (500×375, noise over gradients and
shapes, quality 90: about 100 KB, like ImageNet/COCO photos). The two are timed in alternating
rounds so load on the machine hits both alike; a task's figure is its best round.

    gppf-bench decode [--json] [--task T ...] [--images N] [--rounds R]

Per task type, at the reference input sizes of DESIGN.md §2: images/s per core of each path,
their ratio, the decode scale used, and the cores one GPU needs to be fed 3,000 images/s.
`--json` prints one object; `ratio` is ours / Pillow over the whole mix (the same number of
images of every task type, so time adds up per image).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from gppf_dist.data.decode.sample import RawSample, decode_sample
from gppf_dist.data.load.pipeline import reduction_for
from gppf_dist.tasks.registry import get_task_type, make_spec

WIDTH, HEIGHT = 500, 375
GPU_RATE = 3000.0
"""Images/s one GPU trains on (DESIGN.md §6: GPPF-R50 at 224 px on an H100)."""
KEYPOINTS = 17


@dataclass(frozen=True)
class BenchTask:
    type: str
    input_size: tuple[int, int]
    label_space: dict[str, Any]
    ann: Callable[[np.random.Generator], dict[str, Any]]
    mask: bool = False


def _person(rng: np.random.Generator) -> dict[str, Any]:
    x0, y0 = float(rng.uniform(20, 200)), float(rng.uniform(10, 80))
    box = [x0, y0, x0 + float(rng.uniform(120, 260)), y0 + float(rng.uniform(200, 280))]
    kps = [
        [float(rng.uniform(box[0], box[2])), float(rng.uniform(box[1], box[3])), 2]
        for _ in range(KEYPOINTS)
    ]
    return {"box": box, "keypoints": kps}


def _boxes(rng: np.random.Generator) -> dict[str, Any]:
    boxes = []
    for _ in range(int(rng.integers(1, 8))):
        x0, y0 = float(rng.uniform(0, WIDTH - 40)), float(rng.uniform(0, HEIGHT - 40))
        boxes.append(
            [
                x0,
                y0,
                x0 + float(rng.uniform(8, WIDTH - x0)),
                y0 + float(rng.uniform(8, HEIGHT - y0)),
            ]
        )
    return {"boxes": boxes, "labels": [int(rng.integers(0, 80)) for _ in boxes]}


CLASSES = {"classes": [f"c{i}" for i in range(80)]}
TASKS: dict[str, BenchTask] = {
    "classification": BenchTask("classification", (224, 224), CLASSES, lambda r: {"label": 3}),
    "detection": BenchTask("detection", (640, 640), CLASSES, _boxes),
    "segmentation": BenchTask("segmentation", (512, 512), CLASSES, lambda r: {}, mask=True),
    "pose": BenchTask(
        "pose", (256, 192), {"keypoints": [f"k{i}" for i in range(KEYPOINTS)]}, _person
    ),
    "reid": BenchTask("reid", (256, 128), {"num_identities": 100}, lambda r: {"identity": 7}),
    "face": BenchTask("face", (112, 112), {"num_identities": 100}, lambda r: {"identity": 7}),
    "attributes": BenchTask(
        "attributes",
        (256, 192),
        {"attributes": ["a", "b", "c"]},
        lambda r: {"attributes": [1, 0, 1]},
    ),
}
"""Input sizes of DESIGN.md §2's reference composition."""


def photo_like(rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """HxWx3 uint8: colour gradients, a few flat shapes and sensor-like noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3)
    image = 128 + 90 * np.sin(xx[..., None] / width * 3 * a + yy[..., None] / height * 3 * b)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        image[y0 : y0 + int(rng.integers(20, 160)), x0 : x0 + int(rng.integers(20, 160))] = (
            rng.uniform(0, 255, 3)
        )
    image += rng.normal(0, 16, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_samples(task: BenchTask, n: int, seed: int = 0) -> list[RawSample]:
    """`n` raw samples of a task: generated JPEGs, annotations (and masks) as shards hold them."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        members = {"jpg": jpeg_bytes(photo_like(rng))}
        ann = {"width": WIDTH, "height": HEIGHT, **task.ann(rng)}
        members["json"] = json.dumps(ann).encode()
        if task.mask:
            mask = rng.integers(0, len(task.label_space["classes"]), (HEIGHT // 25, WIDTH // 25))
            full = np.kron(mask, np.ones((25, 25), np.int64)).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(full, mode="L").save(buf, format="PNG")
            members["png"] = buf.getvalue()
        samples.append(RawSample(f"s{i:05d}", members))
    return samples


def _round(task: BenchTask, samples: list[RawSample], decoder: str) -> tuple[float, int]:
    """(seconds, the smallest decode scale used, in eighths) to decode and prepare every
    sample once."""
    spec = make_spec("bench", task.type, task.input_size, task.label_space)
    task_type = get_task_type(task.type)
    reduce = reduction_for(task_type, spec) if decoder == "turbo" else None
    eighths = 8
    start = time.perf_counter()
    for i, raw in enumerate(samples):
        sample = decode_sample(raw, needs_mask=task.mask, decoder=decoder, reduce=reduce)
        eighths = min(eighths, sample.scale_eighths)
        task_type.prepare(sample, spec, True, np.random.default_rng(i))
    return time.perf_counter() - start, eighths


def run(tasks: list[str], images: int, rounds: int) -> dict[str, Any]:
    per_task: dict[str, dict[str, float]] = {}
    sizes: list[int] = []
    for name in tasks:
        task = TASKS[name]
        samples = make_samples(task, images)
        sizes += [len(s.members["jpg"]) for s in samples]
        _round(task, samples[:2], "turbo")  # warm-up: caches, lazy imports
        best = {"pillow": float("inf"), "turbo": float("inf")}
        eighths = 8
        for _ in range(rounds):
            for decoder in best:
                seconds, used = _round(task, samples, decoder)
                best[decoder] = min(best[decoder], seconds)
                eighths = min(eighths, used)
        ours, pillow = images / best["turbo"], images / best["pillow"]
        per_task[name] = {
            "input_size": list(task.input_size),
            "ours_img_s": ours,
            "pillow_img_s": pillow,
            "ratio": ours / pillow,
            "decode_scale": f"{eighths}/8",
            "cores_per_gpu": GPU_RATE / ours,
            "pillow_cores_per_gpu": GPU_RATE / pillow,
        }
    ours_time = sum(1 / v["ours_img_s"] for v in per_task.values())
    pillow_time = sum(1 / v["pillow_img_s"] for v in per_task.values())
    return {
        "ratio": pillow_time / ours_time,
        "ours_img_s": len(per_task) / ours_time,
        "pillow_img_s": len(per_task) / pillow_time,
        "cores_per_gpu": GPU_RATE * ours_time / len(per_task),
        "gpu_img_s": GPU_RATE,
        "image_size": [WIDTH, HEIGHT],
        "jpeg_kb": float(np.mean(sizes)) / 1e3,
        "images": images,
        "rounds": rounds,
        "tasks": per_task,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="gppf-bench decode", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--task", action="append", choices=sorted(TASKS), help="task type (repeatable; default all)"
    )
    parser.add_argument("--images", type=int, default=48, help="generated images per task type")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per task type")
    args = parser.parse_args(argv)
    if args.images < 1 or args.rounds < 1:
        raise SystemExit("gppf-bench decode: --images and --rounds must be >= 1")
    torch.set_num_threads(1)  # one core for both paths (the warp runs in torch)
    result = run(args.task or list(TASKS), args.images, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['images']} generated {WIDTH}x{HEIGHT} JPEGs per task type, "
        f"{result['jpeg_kb']:.0f} KB on average; one core; best of {result['rounds']} rounds"
    )
    print(
        f"{'task type':15s} {'input':>9s} {'ours/s':>8s} {'Pillow/s':>9s} {'ratio':>6s} "
        f"{'scale':>6s} {'cores/GPU':>9s} {'(Pillow)':>9s}"
    )
    for name, v in result["tasks"].items():
        size = "x".join(str(s) for s in v["input_size"])
        print(
            f"{name:15s} {size:>9s} {v['ours_img_s']:8.0f} {v['pillow_img_s']:9.0f} "
            f"{v['ratio']:6.2f} {v['decode_scale']:>6s} {v['cores_per_gpu']:9.1f} "
            f"{v['pillow_cores_per_gpu']:9.1f}"
        )
    print(
        f"mix: ours {result['ours_img_s']:.0f}/s, Pillow {result['pillow_img_s']:.0f}/s per core, "
        f"ratio {result['ratio']:.2f}; {result['cores_per_gpu']:.1f} cores per GPU at "
        f"{GPU_RATE:.0f} img/s"
    )
