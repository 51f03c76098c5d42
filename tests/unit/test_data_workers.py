"""TaskLoader with worker processes: exact coverage, bit-identical batches, exact resume, skips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from gppf_dist.data.format.manifest import Manifest, TaskManifest, load_manifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.data.load.loader import TaskLoader
from gppf_dist.data.load.streams import StreamPosition
from gppf_dist.data.load.workers import deal_streams
from gppf_dist.simt.plan import TaskDemand, plan_static
from gppf_dist.tasks.base import Batch
from gppf_dist.tasks.registry import get_task_type, make_spec
from tests.fake_task import ResizeTaskType, fake_spec

S = 4  # canonical streams per task (tiny_shards: 4 train shards of 16 samples per task)
B = 16  # global batch per task: 4 per stream, so one epoch is 4 steps
SIZES = {
    "cls_object": (64, 64),
    "cls_scene": (64, 64),
    "det": (96, 96),
    "seg": (64, 64),
    "pose": (64, 48),
    "reid": (64, 32),
    "face": (48, 48),
    "attr": (64, 32),
}


def _task_loader(
    root: Path, manifest: Manifest, task: str, streams: list[int], workers: int, **kw: Any
) -> TaskLoader:
    tm = manifest.task(task)
    return TaskLoader(
        root=root,
        manifest=manifest,
        task=task,
        spec=make_spec(task, tm.type, SIZES[task], tm.label_space),
        task_type=get_task_type(tm.type),
        num_streams=S,
        stream_ids=streams,
        per_stream_batch=B // S,
        seed=3,
        num_workers=workers,
        **kw,
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _same_batch(a: Batch, b: Batch) -> bool:
    return (
        a.keys == b.keys
        and torch.equal(a.images, b.images)
        and torch.equal(a.groups, b.groups)
        and _same(a.targets, b.targets)
    )


@pytest.mark.parametrize("world", [1, 2, 3, 16])
def test_one_epoch_every_key_once_with_two_workers(tiny_shards: Path, world: int) -> None:
    manifest = load_manifest(tiny_shards)
    tasks = sorted(manifest.tasks) if world <= 3 else ["det", "seg"]
    demands = [TaskDemand(t, B, S) for t in tasks]
    plan = plan_static(demands, world)
    for task in tasks:
        parts = [
            list(w.stream_ids) for r in range(world) for w in plan.rank_work(r) if w.task == task
        ]
        assert sorted(s for p in parts for s in p) == list(range(S))
        assert (len(parts) > 1) == (world > len(tasks))  # world 16 splits each task over ranks
        loaders = [_task_loader(tiny_shards, manifest, task, p, workers=2) for p in parts]
        keys = [k for _ in range(4) for ld in loaders for k in next(ld).keys]
        assert len(keys) == manifest.task(task).num_samples("train") == len(set(keys)), task
        assert all(
            ld.positions() == {s: StreamPosition(0, 16) for s in ld.stream_ids} for ld in loaders
        )
        for ld in loaders:
            ld.close()


@pytest.mark.parametrize("task", ["det", "seg", "pose", "attr"])
def test_workers_bit_identical_and_resume_exact(tiny_shards: Path, task: str) -> None:
    manifest = load_manifest(tiny_shards)
    plain = _task_loader(tiny_shards, manifest, task, [0, 1, 2, 3], workers=0)
    pooled = _task_loader(tiny_shards, manifest, task, [0, 1, 2, 3], workers=2)
    reference: list[Batch] = []
    saved: dict[int, StreamPosition] = {}
    for step in range(6):  # crosses the epoch boundary at step 4
        if step == 3:
            saved = pooled.positions()
            assert saved == plain.positions()
        want, got = next(plain), next(pooled)
        assert _same_batch(want, got), (task, step)
        reference.append(want)
    pooled.close()
    # resume at step 3 on "two ranks" that split the streams differently, 2 workers each
    ranks = [
        _task_loader(tiny_shards, manifest, task, s, workers=2, start_positions=saved)
        for s in ([3, 0], [2, 1])
    ]
    for want in reference[3:]:
        got = [next(r) for r in ranks]
        order = {k: i for i, k in enumerate(want.keys)}
        keys = [k for b in got for k in b.keys]
        assert sorted(keys, key=order.__getitem__) == want.keys
        images = torch.cat([b.images for b in got])
        index = torch.tensor([keys.index(k) for k in want.keys])
        assert torch.equal(images[index], want.images)
    for r in ranks:
        r.close()


def _toy_root(root: Path) -> Manifest:
    """3 shards x 6 samples; shard 1 holds a corrupt JPEG, a missing json and a bad annotation."""
    import io

    from PIL import Image

    with ShardWriter(root, "toy", "train", "toy", samples_per_shard=6) as w:
        for i in range(18):
            buf = io.BytesIO()
            Image.new("RGB", (12, 10), (i * 13 % 256, 40, 90)).save(buf, format="JPEG")
            members = {"jpg": buf.getvalue(), "json": json.dumps({"label": i % 5}).encode()}
            if i == 7:
                members["jpg"] = b"\xff\xd8 not a jpeg"
            elif i == 8:
                del members["json"]
            elif i == 9:
                members["json"] = json.dumps({"label": 1, "bad": 1}).encode()
            w.write(f"t{i:03d}", members)
    tm = TaskManifest("toy", "classification", "toy", {"classes": list("abcde")}, {})
    tm.splits["train"] = w.close()
    return Manifest(tasks={"toy": tm})


def test_worker_skip_counts_reach_the_loader(tmp_path: Path) -> None:
    manifest = _toy_root(tmp_path)

    def make(workers: int, streams: list[int]) -> TaskLoader:
        return TaskLoader(
            root=tmp_path,
            manifest=manifest,
            task="toy",
            spec=fake_spec("toy", (8, 8)),
            task_type=ResizeTaskType(),
            num_streams=3,
            stream_ids=streams,
            per_stream_batch=2,
            seed=0,
            num_workers=workers,
        )

    plain, pooled = make(0, [0, 1, 2]), make(3, [0, 1, 2])
    for _ in range(5):
        assert _same_batch(next(plain), next(pooled))
        assert pooled.skipped == plain.skipped  # counts follow consumed steps, not prefetch
    assert set(pooled.skipped) == {"decode", "missing_member", "annotation"}
    pooled.close()
    # more workers than streams, and a rank without streams: no hang, no empty worker
    assert deal_streams([5, 1], 3) == [[5], [1]] and deal_streams([], 2) == []
    many = make(4, [1, 2])
    assert len(next(many).keys) == 4
    many.close()
    with pytest.raises(StopIteration):
        next(make(2, []))
