"""One deterministic evaluation pass over a part of a split (no augmentation).

Parts are contiguous, balanced ranges of the split's global sample index in manifest order, so
every sample belongs to exactly one part whatever the number of parts, and a part only reads the
shards its range overlaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from gppf_dist.data.decode.jpeg import default_decoder
from gppf_dist.data.decode.sample import SkipCounter
from gppf_dist.data.format.manifest import Manifest
from gppf_dist.data.load.pipeline import SampleContext, collate, load_shard_samples, prepare_sample
from gppf_dist.data.load.streams import eval_range
from gppf_dist.tasks.base import Batch, TaskSpec, TaskType


class EvalIterator(Iterator[Batch]):
    """One pass over part `part` of `num_parts` of a split: contiguous global sample indices."""

    def __init__(
        self,
        *,
        root: Path,
        manifest: Manifest,
        task: str,
        spec: TaskSpec,
        task_type: TaskType,
        split: str,
        batch_size: int,
        num_parts: int,
        part: int,
        decoder: str = "",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"task {task!r}: eval batch_size must be >= 1, got {batch_size}")
        tm = manifest.task(task)
        self.task = task
        self.task_type = task_type
        self.part = part
        self.batch_size = batch_size
        self._shards = tm.shards(split)
        self.start, self.stop = eval_range(tm.num_samples(split), num_parts, part)
        self._ctx = SampleContext(
            root=Path(root),
            task=task,
            spec=spec,
            task_type=task_type,
            seed=0,
            train=False,
            needs_mask=task_type.needs_mask,
            skips=SkipCounter(task),
            decoder=decoder or default_decoder(),
        )
        self._items = self._iter_items()

    def _iter_items(self) -> Iterator[tuple[str, torch.Tensor, Any]]:
        first = 0
        for shard in self._shards:
            lo, hi = max(self.start, first), min(self.stop, first + shard.samples)
            if lo < hi:
                samples = load_shard_samples(self._ctx, shard)
                for g in range(lo, hi):
                    where = f"{shard.path}#{g - first}"
                    item = prepare_sample(self._ctx, samples[g - first], (0, 0, g), where)
                    if item is not None:
                        yield item
            first += shard.samples

    def __next__(self) -> Batch:
        items: list[tuple[str, torch.Tensor, Any]] = []
        for item in self._items:
            items.append(item)
            if len(items) == self.batch_size:
                break
        if not items:
            raise StopIteration
        return collate(self.task, self.task_type, items, [self.part] * len(items))

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self._ctx.skips.counts)


def iter_eval_batches(
    *,
    root: Path,
    manifest: Manifest,
    task: str,
    spec: TaskSpec,
    task_type: TaskType,
    split: str = "val",
    batch_size: int,
    num_parts: int = 1,
    part: int = 0,
    decoder: str = "",
) -> EvalIterator:
    """A deterministic pass (train=False) over part `part` of `num_parts` of `split`.

    Parts are contiguous, balanced ranges of the split's global sample index (manifest order), so
    every sample is in exactly one part; the last batch of a part may be smaller, and a part may
    be empty. The returned iterator's `.skipped` counts skipped samples by reason. `decoder`:
    as `data.decoder` (empty: `$GPPF_DECODER`, else turbo).
    """
    return EvalIterator(
        root=root,
        manifest=manifest,
        task=task,
        spec=spec,
        task_type=task_type,
        split=split,
        batch_size=batch_size,
        num_parts=num_parts,
        part=part,
        decoder=decoder,
    )
