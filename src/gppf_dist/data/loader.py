"""Deterministic, resumable per-task loaders over canonical streams (see `streams`).

`TaskLoader` reads the streams a rank is assigned and yields, per step, `per_stream_batch`
samples from each, concatenated in `stream_ids` order. Because every stream's position is a
`StreamPosition` and all randomness is derived from (seed, task, stream, epoch, index), the
global batch at a step does not depend on how streams are spread over ranks, and
`TaskLoader(..., start_positions=loader.positions())` continues exactly where a loader stopped.

Bad samples are skipped (counted in `.skipped` by reason) and replaced by the next sample of the
same stream, so batches are always full; the skip pattern is itself deterministic.
`iter_eval_batches` (re-exported from `eval_loader`) is one plain pass over a split part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gppf_dist.data.decode import RawSample, SkipCounter
from gppf_dist.data.eval_loader import EvalIterator, iter_eval_batches
from gppf_dist.data.manifest import Manifest, ShardInfo
from gppf_dist.data.pipeline import SampleContext, collate, load_shard_samples, prepare_sample
from gppf_dist.data.streams import (
    EpochPlan,
    StreamPosition,
    epoch_plan,
    stream_shards,
)
from gppf_dist.tasks.base import Batch, TaskSpec, TaskType

__all__ = ["EvalIterator", "StreamPosition", "TaskLoader", "iter_eval_batches"]


class _StreamReader:
    """Reads one canonical stream from a `StreamPosition`, holding one shard group in memory."""

    def __init__(
        self,
        ctx: SampleContext,
        stream: int,
        shards: list[ShardInfo],
        shard_ids: list[int],
        shards_per_group: int,
        position: StreamPosition,
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.shards = shards
        self.shard_ids = shard_ids
        self.shards_per_group = shards_per_group
        self.epoch = position.epoch
        self.index = position.index
        self._plan: EpochPlan | None = None
        self._group_no = -1
        self._group: list[RawSample | None] = []

    def _plan_for(self, epoch: int) -> EpochPlan:
        if self._plan is None or self._plan.epoch != epoch:
            self._plan = epoch_plan(
                task=self.ctx.task,
                seed=self.ctx.seed,
                stream=self.stream,
                epoch=epoch,
                shard_ids=self.shard_ids,
                shard_sizes={i: self.shards[i].samples for i in self.shard_ids},
                shards_per_group=self.shards_per_group,
            )
            self._group_no = -1
            self._group = []
        return self._plan

    def position(self) -> StreamPosition:
        return StreamPosition(self.epoch, self.index)

    def take(self, n: int) -> list[tuple[str, torch.Tensor, Any]]:
        """The next `n` good samples, advancing the position past any skipped ones."""
        out: list[tuple[str, torch.Tensor, Any]] = []
        failures = 0
        while len(out) < n:
            plan = self._plan_for(self.epoch)
            if self.index >= plan.length:
                self.epoch, self.index = self.epoch + 1, 0
                continue
            g, offset = plan.group_at(self.index)
            group = plan.groups[g]
            if g != self._group_no:
                self._group = []  # release the old group's bytes before reading the next
                for shard in group.shards:
                    self._group.extend(load_shard_samples(self.ctx, self.shards[shard]))
                self._group_no = g
            sample_no = int(group.order[offset])
            shard, local = group.locate(sample_no)
            where = f"{self.shards[shard].path}#{local}"
            item = prepare_sample(
                self.ctx, self._group[sample_no], (self.stream, self.epoch, self.index), where
            )
            self.index += 1
            if item is None:
                failures += 1
                if failures > plan.length:
                    raise RuntimeError(
                        f"task {self.ctx.task!r}: stream {self.stream} has no usable sample in "
                        f"a whole epoch; skipped so far: {self.ctx.skips.counts}"
                    )
                continue
            failures = 0
            out.append(item)
        return out


class TaskLoader:
    """Per-step batches of one task from the canonical streams `stream_ids` (see module doc)."""

    def __init__(
        self,
        *,
        root: Path,
        manifest: Manifest,
        task: str,
        spec: TaskSpec,
        task_type: TaskType,
        num_streams: int,
        stream_ids: list[int],
        per_stream_batch: int,
        seed: int,
        train: bool = True,
        start_positions: dict[int, StreamPosition] | None = None,
        split: str = "train",
        shards_per_group: int = 1,
    ) -> None:
        if per_stream_batch < 1:
            raise ValueError(
                f"task {task!r}: per_stream_batch must be >= 1, got {per_stream_batch}"
            )
        if len(set(stream_ids)) != len(stream_ids):
            raise ValueError(f"task {task!r}: stream_ids has duplicates: {stream_ids}")
        tm = manifest.task(task)
        shards = tm.shards(split)
        self.task = task
        self.task_type = task_type
        self.stream_ids = list(stream_ids)
        self.per_stream_batch = per_stream_batch
        self._ctx = SampleContext(
            root=Path(root),
            task=task,
            spec=spec,
            task_type=task_type,
            seed=seed,
            train=train,
            needs_mask=tm.type == "segmentation",
            skips=SkipCounter(task),
        )
        start_positions = start_positions or {}
        self._readers: list[_StreamReader] = []
        for stream in self.stream_ids:
            ids = stream_shards(task, len(shards), num_streams, stream)
            pos = start_positions.get(stream, StreamPosition())
            if pos.epoch < 0 or pos.index < 0:
                raise ValueError(f"task {task!r}: stream {stream} start position {pos} is negative")
            self._readers.append(
                _StreamReader(self._ctx, stream, shards, ids, shards_per_group, pos)
            )

    def __iter__(self) -> TaskLoader:
        return self

    def __next__(self) -> Batch:
        if not self._readers:
            raise StopIteration
        items: list[tuple[str, torch.Tensor, Any]] = []
        groups: list[int] = []
        for reader in self._readers:
            got = reader.take(self.per_stream_batch)
            items.extend(got)
            groups.extend([reader.stream] * len(got))
        return collate(self.task, self.task_type, items, groups)

    def positions(self) -> dict[int, StreamPosition]:
        """Per stream, where the next step starts (merge the dicts of all ranks to checkpoint)."""
        return {r.stream: r.position() for r in self._readers}

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self._ctx.skips.counts)
