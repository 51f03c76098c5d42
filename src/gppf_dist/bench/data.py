"""`gppf-bench data`: samples/s per worker of our loader vs a plain webdataset pipeline.

For each task both pipelines do the same work on the same shards in one process (one worker):
read the tar, decode JPEG (+ PNG mask) and JSON, the task type's `prepare` (train augmentation)
and the per-batch collate. Ours is `TaskLoader` (canonical streams, safe reader, skip counting);
the plain one is `webdataset.WebDataset(...).map(...).batched(...)`. The two are measured in
alternating rounds so load on the machine hits both alike; a task's figure is its best round.

    gppf-bench data [--json] [--task T ...] [--seconds S] [--root DIR]

`--json` prints one object: `ratio` (ours / plain over all tasks: total samples / total time)
and per-task samples/s. Without `--root` a synthetic corpus is generated into a temp dir.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from gppf_dist.data.format.manifest import Manifest, load_manifest
from gppf_dist.data.load.loader import TaskLoader
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from gppf_dist.tasks.base import Sample
from gppf_dist.tasks.registry import get_task_type, make_spec

SIZES = {"det": (96, 96), "pose": (64, 48), "reid": (64, 32), "face": (48, 48), "attr": (64, 32)}
STREAMS = 4
BATCH = 16


def _ours(root: Path, manifest: Manifest, task: str) -> Iterator[int]:
    tm = manifest.task(task)
    loader = TaskLoader(
        root=root,
        manifest=manifest,
        task=task,
        spec=make_spec(task, tm.type, SIZES.get(task, (64, 64)), tm.label_space),
        task_type=get_task_type(tm.type),
        num_streams=STREAMS,
        stream_ids=list(range(STREAMS)),
        per_stream_batch=BATCH // STREAMS,
        seed=0,
    )
    for batch in loader:
        yield len(batch.keys)


def _plain(root: Path, manifest: Manifest, task: str) -> Iterator[int]:
    tm = manifest.task(task)
    spec = make_spec(task, tm.type, SIZES.get(task, (64, 64)), tm.label_space)
    task_type = get_task_type(tm.type)
    urls = [str(root / s.path) for s in tm.shards("train")]

    def prepare(raw: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        ann = json.loads(raw["json"])
        if "cls" in raw and "label" not in ann:
            ann["label"] = int(raw["cls"])
        image = np.array(Image.open(io.BytesIO(raw["jpg"])).convert("RGB"))
        mask = np.array(Image.open(io.BytesIO(raw["png"]))) if "png" in raw else None
        sample = Sample(key=raw["__key__"], image=image, ann=ann, mask=mask)
        return task_type.prepare(sample, spec, True, np.random.default_rng(0))

    def collate(items: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, Any]:
        return torch.stack([i for i, _ in items]), task_type.collate([t for _, t in items])

    pipeline = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .map(prepare)
        .batched(BATCH, collation_fn=collate, partial=False)
    )
    while True:  # epochs
        for images, _ in pipeline:
            yield images.shape[0]


def _rate(make: Callable[[], Iterator[int]], seconds: float) -> float:
    """Samples/s of one round (after one warm-up batch)."""
    it = make()
    next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += next(it)
    return n / (time.perf_counter() - start)


def run(root: Path, tasks: list[str], seconds: float, rounds: int = 3) -> dict[str, Any]:
    manifest = load_manifest(root)
    per_task: dict[str, dict[str, float]] = {}
    per_round = seconds / (2 * rounds * len(tasks))
    for task in tasks:
        ours, plain = 0.0, 0.0
        for _ in range(rounds):
            ours = max(ours, _rate(lambda t=task: _ours(root, manifest, t), per_round))
            plain = max(plain, _rate(lambda t=task: _plain(root, manifest, t), per_round))
        per_task[task] = {"ours": ours, "plain": plain, "ratio": ours / plain}
    # overall: the same number of samples of every task, so time adds up per sample
    ours_time = sum(1 / v["ours"] for v in per_task.values())
    plain_time = sum(1 / v["plain"] for v in per_task.values())
    return {"ratio": plain_time / ours_time, "workers": 1, "tasks": per_task}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="gppf-bench data", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--task", action="append", help="task name (repeatable; default all)")
    parser.add_argument("--seconds", type=float, default=24.0, help="total measuring time")
    parser.add_argument("--root", help="shard root (default: a synthetic corpus in a temp dir)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one worker = one core, for both pipelines
    with tempfile.TemporaryDirectory(prefix="gppf-bench-data-") as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if not args.root:
            write_synthetic_corpus(root, samples_per_task=256, val_per_task=8, seed=0)
        tasks = args.task or sorted(load_manifest(root).tasks)
        result = run(root, tasks, args.seconds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'task':12s} {'ours/s':>9s} {'plain/s':>9s} {'ratio':>6s}   (1 worker each)")
    for task, v in result["tasks"].items():
        print(f"{task:12s} {v['ours']:9.0f} {v['plain']:9.0f} {v['ratio']:6.2f}")
    print(f"overall ratio (ours / plain): {result['ratio']:.3f}")
