"""A few-shot (or fractional) training set: a seeded subset of one task's train split, written
as a shard root of its own whose `val` split is the original one (linked, not copied).

`select_subset` picks global sample indices: `shots` per class (for a task type with one class
per sample, `TaskType.class_label` of each sample's annotation: classification's `label`) or a
`fraction` of the split, with `seed`; `write_subset` copies those samples' members, in a seeded
order, into new shards with our writer (so the manifest has sample offsets and the loaders,
streams and exactness are those of any shard root). Samples whose annotation cannot be read are
not candidates.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gppf_dist.data.decode.sample import read_shard
from gppf_dist.data.format.manifest import Manifest, TaskManifest, save_manifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.tasks.registry import get_task_type

log = logging.getLogger(__name__)
SUBSET_SHARD = 256


def _labels(root: Path, tm: TaskManifest, class_label: Callable[[Any], int]) -> list[int | None]:
    """Every train sample's class label, in manifest order (None where unreadable)."""
    out: list[int | None] = []
    for shard in tm.shards("train"):
        samples = read_shard(root / shard.path).samples[: shard.samples]
        for raw in samples:
            try:
                out.append(int(class_label(json.loads(raw.members["json"]))))
            except (KeyError, ValueError, TypeError):
                out.append(None)
        out.extend([None] * (shard.samples - len(samples)))
    return out


def select_subset(
    root: Path, tm: TaskManifest, shots: int, fraction: float, seed: int
) -> list[int]:
    """Sorted global indices of the train samples to keep (see the module docstring)."""
    rng = np.random.default_rng(seed)
    total = tm.num_samples("train")
    if shots <= 0:
        keep = max(1, round(total * fraction))
        return sorted(int(i) for i in rng.permutation(total)[:keep])
    class_label = getattr(get_task_type(tm.type), "class_label", None)
    if class_label is None:
        raise ValueError(
            f"`finetune.shots`={shots}: shots per class need a task type with one class per "
            f"sample (classification); task {tm.name!r} is {tm.type} (use finetune.train_fraction)"
        )
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(_labels(root, tm, class_label)):
        if label is not None:
            by_class.setdefault(label, []).append(index)
    keep = []
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < shots:
            log.warning("class %d of task %s has %d samples, fewer than %d shots: all kept",
                        label, tm.name, len(members), shots)  # fmt: skip
        keep += [members[int(i)] for i in rng.permutation(len(members))[:shots]]
    return sorted(keep)


def write_subset(
    root: Path, manifest: Manifest, task: str, out: Path, keep: list[int], seed: int
) -> Manifest:
    """`out`/manifest.json with task `task`: the kept train samples, shuffled with `seed`, and
    the original val split (its shard files linked)."""
    tm = manifest.task(task)
    wanted = set(keep)
    members: dict[int, tuple[str, dict[str, bytes]]] = {}
    start = 0
    for shard in tm.shards("train"):
        if wanted.intersection(range(start, start + shard.samples)):
            for k, raw in enumerate(read_shard(root / shard.path).samples[: shard.samples]):
                if start + k in wanted and raw.error is None:
                    members[start + k] = (raw.key, raw.members)
        start += shard.samples
    order = [keep[int(i)] for i in np.random.default_rng(seed).permutation(len(keep))]
    with ShardWriter(out, task, "train", "subset", samples_per_shard=SUBSET_SHARD) as writer:
        for index in order:
            if index in members:
                key, parts = members[index]
                writer.write(key, parts)
    splits = {"train": writer.close()}
    if not splits["train"]:
        raise ValueError(f"task {task!r}: the subset of its train split is empty")
    for split, shards in tm.splits.items():
        if split == "train":
            continue
        for shard in shards:
            link = out / shard.path
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink((root / shard.path).resolve(), link)
        splits[split] = list(shards)
    subset = Manifest(tasks={task: TaskManifest(task, tm.type, tm.dataset, tm.label_space, splits)})
    save_manifest(out, subset)
    return subset
