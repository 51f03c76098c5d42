"""`gppf-shards convert`: standard on-disk dataset layouts into shards plus manifest entries.

A layout reader (`layouts`) lists a source as a `Converted`: the task type, its label space, an
indexable list of lightweight items and a loader turning one item into members. This module
shuffles the items with a seed (real datasets arrive sorted: ImageFolder by class, COCO by image
id), cuts the shuffled order into shards of `samples_per_shard` items, has `convert_parallel`
write them (one or several processes, identical bytes, resumable), checks every annotation
against the task type's schema on the way, and merges the task's split into
`<out>/manifest.json`, so several conversions can fill one root.

Keys are `<task>_<split>_<position in the shuffled order>`: an item skipped while loading leaves
a gap, never renames the samples after it. `samples_per_shard` alone decides what goes where;
`max_shard_bytes` is a ceiling that is warned about, not a cut (cutting by bytes would make a
shard's contents depend on the shards before it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from gppf_dist.data.convert.layouts.base import Converted
from gppf_dist.data.convert.parallel import (
    ShardJob,
    ShardResult,
    finished_shard,
    run_shards,
    shuffled_order,
)
from gppf_dist.data.format.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    TaskManifest,
    manifest_from_dict,
    save_manifest,
)

DEFAULT_SAMPLES_PER_SHARD = 10_000
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
DEFAULT_SEED = 0


def _merge(out: Path, task: str, split: str, conv: Converted, shards: list[ShardInfo]) -> Manifest:
    path = out / MANIFEST_NAME
    manifest = Manifest()
    if path.is_file():
        manifest = manifest_from_dict(json.loads(path.read_text(encoding="utf-8")), str(path), out)
    old = manifest.tasks.get(task)
    splits = {} if old is None else dict(old.splits)
    if old is not None and (old.type, old.label_space) != (conv.type, conv.label_space):
        others = [s for s in old.splits if s != split]
        if others:
            raise ValueError(
                f"{path}: task {task!r} already has split(s) {others} of type {old.type!r} with "
                f"a different label space; convert into a new task name or root"
            )
    splits[split] = shards
    manifest.tasks[task] = TaskManifest(task, conv.type, conv.dataset, conv.label_space, splits)
    save_manifest(out, manifest)
    return manifest


def _remove_stale(job: ShardJob, dataset: str, num_shards: int) -> None:
    """Delete this split's shards (and markers) numbered past the conversion's last one: left
    by an earlier conversion of the same dataset into more shards, listed by no manifest."""
    for path in (job.out / job.task / job.split).glob(f"{dataset}-*.tar"):
        index = path.stem[len(dataset) + 1 :]
        if index.isdigit() and len(index) == 6 and int(index) >= num_shards:
            path.unlink()
            job.marker(dataset, int(index)).unlink(missing_ok=True)


def fingerprint(conv: Converted, task: str, split: str, samples_per_shard: int, seed: int) -> str:
    """What a finished shard must have been written for, to be kept by a rerun."""
    sha = hashlib.sha256()
    head = [conv.type, conv.dataset, conv.label_space, task, split, samples_per_shard, seed]
    sha.update(json.dumps(head, sort_keys=True).encode())
    for item in conv.items:
        sha.update(repr(item).encode())
        sha.update(b"\n")
    return sha.hexdigest()


def write_converted(
    conv: Converted,
    out: Path,
    task: str,
    split: str,
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    max_shard_bytes: int | None = DEFAULT_SHARD_BYTES,
    seed: int = DEFAULT_SEED,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, list[ShardResult]]:
    """Write `conv` shuffled as `<out>/<task>/<split>/` shards, keeping shards a previous run
    finished, and merge the split into the manifest. `progress(n)` is told of every n items
    done. Returns the manifest and one result per shard (in shard order)."""
    if samples_per_shard < 1:
        raise ValueError(f"convert: --samples-per-shard must be >= 1, got {samples_per_shard}")
    if workers < 1:
        raise ValueError(f"convert: --workers must be >= 1, got {workers}")
    if not conv.items:
        raise ValueError(f"convert: no source items for task {task!r} (skipped {conv.skipped})")
    out = Path(out)
    job = ShardJob(
        out, task, split, samples_per_shard, max_shard_bytes,
        fingerprint(conv, task, split, samples_per_shard, seed),
    )  # fmt: skip
    order = shuffled_order(len(conv.items), seed)
    num_shards = -(-len(order) // samples_per_shard)
    tell = progress or (lambda n: None)
    results: dict[int, ShardResult] = {}
    for k in range(num_shards):
        items = min(samples_per_shard, len(order) - k * samples_per_shard)
        res = finished_shard(conv, job, k, items)
        if res is not None:
            results[k] = res
            tell(items)
    todo = [k for k in range(num_shards) if k not in results]
    for res in run_shards(conv, order, job, todo, workers, tell):
        results[res.index] = res
    _remove_stale(job, conv.dataset, num_shards)
    ordered = [results[k] for k in range(num_shards)]
    for res in ordered:
        for reason, n in res.skipped.items():
            conv.skip(reason, n)
    shards = [r.shard for r in ordered if r.shard is not None]
    if not shards:
        raise ValueError(f"convert: no usable samples for task {task!r} (skipped {conv.skipped})")
    return _merge(out, task, split, conv, shards), ordered
