"""Reading one canonical stream, and the per-stream chunk of a step that loaders assemble.

`StreamReader` turns a `StreamPosition` into the next good samples of its stream, holding one
shard group in memory (see `streams`). `StreamChunk` is what one stream contributes to a step:
keys, the stacked images and the uncollated targets. Loaders (in-process or in worker processes)
produce chunks; `assemble` concatenates them in `stream_ids` order into the step's `Batch`, so
the result does not depend on which process read which stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gppf_dist.data.decode import RawSample
from gppf_dist.data.manifest import ShardInfo
from gppf_dist.data.pipeline import SampleContext, load_shard_samples, prepare_sample
from gppf_dist.data.streams import EpochPlan, StreamPosition, Unit, epoch_plan
from gppf_dist.tasks.base import Batch, TaskType


@dataclass
class StreamChunk:
    """One stream's share of one step."""

    stream: int
    keys: list[str]
    images: torch.Tensor | list[torch.Tensor]
    """The prepared 3 x H x W uint8 images: stacked (n x 3 x H x W) when the chunk crosses
    processes (one shared-memory tensor instead of n), else the list (stacked once per step)."""
    targets: list[Any]
    """Per-sample targets as `TaskType.prepare` returned them (collated later, per step)."""
    position: StreamPosition
    """Where the stream's next step starts."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Samples skipped (by reason) while reading this chunk."""

    def part(self, start: int, stop: int) -> StreamChunk:
        """Samples [start, stop) of the chunk (a plan's slice can start or end inside it)."""
        if (start, stop) == (0, len(self.keys)):
            return self
        return replace(
            self,
            keys=self.keys[start:stop],
            images=self.images[start:stop],
            targets=self.targets[start:stop],
        )


class StreamReader:
    """Reads one canonical stream from a `StreamPosition`, holding one shard group in memory."""

    def __init__(
        self,
        ctx: SampleContext,
        stream: int,
        shards: list[ShardInfo],
        units: list[Unit],
        shards_per_group: int,
        position: StreamPosition,
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.shards = shards
        self.units = units
        """The stream's shards or parts of shards (`streams.stream_units`)."""
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
                shard_ids=list(range(len(self.units))),
                shard_sizes={i: u.size for i, u in enumerate(self.units)},
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
                for u in group.shards:  # unit numbers
                    unit = self.units[u]
                    shard = self.shards[unit.shard]
                    self._group.extend(load_shard_samples(self.ctx, shard, unit.start, unit.stop))
                self._group_no = g
            sample_no = int(group.order[offset])
            u, local = group.locate(sample_no)
            unit = self.units[u]
            where = f"{self.shards[unit.shard].path}#{unit.start + local}"
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

    def take_chunk(self, n: int, stack: bool = False) -> StreamChunk:
        """The next `n` good samples as this stream's chunk of a step."""
        before = dict(self.ctx.skips.counts)
        items = self.take(n)
        images = [img for _, img, _ in items]
        skipped = {
            reason: count - before.get(reason, 0)
            for reason, count in self.ctx.skips.counts.items()
            if count != before.get(reason, 0)
        }
        return StreamChunk(
            stream=self.stream,
            keys=[k for k, _, _ in items],
            images=torch.stack(images) if stack else images,
            targets=[t for _, _, t in items],
            position=self.position(),
            skipped=skipped,
        )


def assemble(task: str, task_type: TaskType, chunks: list[StreamChunk]) -> Batch:
    """The step's `Batch` from its stream chunks, in the given (stream_ids) order."""
    groups: list[int] = []
    for c in chunks:
        groups.extend([c.stream] * len(c.keys))
    if all(isinstance(c.images, list) for c in chunks):
        images = torch.stack([img for c in chunks for img in c.images])
    else:
        stacked = [
            c.images if isinstance(c.images, torch.Tensor) else torch.stack(c.images)
            for c in chunks
        ]
        images = stacked[0] if len(stacked) == 1 else torch.cat(stacked)
    return Batch(
        task=task,
        images=images,
        targets=task_type.collate([t for c in chunks for t in c.targets]),
        groups=torch.tensor(groups, dtype=torch.int64),
        keys=[k for c in chunks for k in c.keys],
    )
