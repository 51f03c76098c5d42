"""Reading one canonical stream, and the per-stream chunk of a step that loaders assemble.

`StreamReader` turns a `StreamPosition` into the next good samples of its stream, holding one
shard group in memory (see `streams`). `StreamChunk` is what one stream contributes to a step:
keys, the stacked images and the uncollated targets. Loaders (in-process or in worker processes)
produce chunks; `assemble` concatenates them in `stream_ids` order into the step's `Batch`, so
the result does not depend on which process read which stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gppf_dist.data.decode.sample import RawSample, SkipCounter
from gppf_dist.data.format.manifest import ShardInfo
from gppf_dist.data.load.pipeline import SampleContext, load_shard_samples, prepare_sample
from gppf_dist.data.load.streams import EpochPlan, StreamPosition, Unit, epoch_plan
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
    dropped: dict[str, int] = field(default_factory=dict)
    """Targets (boxes, keypoints) the geometry dropped from this chunk's kept samples, by kind."""
    read_bytes: int = 0
    decoded_bytes: int = 0
    """The reader's sample bytes read from shards and decoded so far."""

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


READ_WHOLE_ABOVE = 2 / 3
"""A reader whose slice of a stream's share is at least this fraction reads whole units (at most
1.5 bytes read per byte decoded); below it, and where the manifest has sample offsets, it reads
each sample it needs by its byte range."""


def _delta(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in now.items() if n != before.get(k, 0)}


def _payload(raw: RawSample | None) -> int:
    return 0 if raw is None else sum(len(b) for b in raw.members.values())


class _Uncounted(SkipCounter):
    """Neither counts nor logs."""

    def record(self, reason: str, message: str, n: int = 1) -> None:
        pass


@dataclass
class _Group:
    """The raw samples of one shard group held in memory: all of them (`whole`) or those read
    one by one; a missing sample maps to the reason its read failed."""

    whole: bool
    samples: dict[int, RawSample | str] = field(default_factory=dict)


class StreamReader:
    """Reads one canonical stream from a `StreamPosition` (see the module docstring of
    `loader`): a step's share of a stream is its next `n` *slots*; slot (epoch, index) holds the
    sample at that raw position, or, when that one is bad, the next good sample after it (with the
    slot's own augmentation). So the samples of a slot never depend on other slots: any rank can
    prepare any part of a share alone, and the position advances by exactly `n` per step.

    Skips are counted per slot: a bad sample is counted by the reader that prepares its slot, so
    counts summed over the ranks sharing a stream are the run's. Shard-level read errors are
    logged where they happen and counted on the slots of the samples they lost."""

    def __init__(
        self,
        ctx: SampleContext,
        stream: int,
        shards: Mapping[int, ShardInfo],
        units: list[Unit],
        shards_per_group: int,
        position: StreamPosition,
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.shards = shards
        self.units = units
        """The stream's shards or parts of shards (`streams.stream_units`); `shards` maps
        (at least) their shard indices to the shards."""
        self.shards_per_group = shards_per_group
        self.epoch = position.epoch
        self.index = position.index
        self._plans: dict[int, EpochPlan] = {}
        self._groups: dict[tuple[int, int], _Group] = {}
        self.indexed = all(shards[u.shard].has_offsets for u in units)
        """Every unit has sample offsets: samples can be read one by one."""
        self._load_log = replace(ctx, skips=SkipCounter(ctx.task))
        """Shard-level read errors: logged (rate-limited), counted on the slots they cost."""
        self._quiet = replace(ctx, skips=_Uncounted(ctx.task))
        """A slot's fallback samples: their own slots count and report them."""
        self.read_bytes = 0
        """Sample bytes read from shards so far."""
        self.decoded_bytes = 0
        """Sample bytes decoded so far (read amplification = read_bytes / decoded_bytes)."""

    def _plan_for(self, epoch: int) -> EpochPlan:
        plan = self._plans.get(epoch)
        if plan is None:
            if len(self._plans) >= 2:  # a step's slots span at most two epochs
                self._plans.pop(min(self._plans))
            plan = self._plans[epoch] = epoch_plan(
                task=self.ctx.task,
                seed=self.ctx.seed,
                stream=self.stream,
                epoch=epoch,
                shard_ids=list(range(len(self.units))),
                shard_sizes={i: u.size for i, u in enumerate(self.units)},
                shards_per_group=self.shards_per_group,
            )
        return plan

    def position(self) -> StreamPosition:
        return StreamPosition(self.epoch, self.index)

    def _after(self, epoch: int, index: int, k: int = 1, end: bool = False) -> tuple[int, int]:
        """The raw position `k` after (epoch, index); with `end`, an epoch's end stays
        (epoch, length), as positions are saved."""
        index += k
        while index > (length := self._plan_for(epoch).length) or (index == length and not end):
            epoch, index = epoch + 1, index - length
        return epoch, index

    def _load(self, shard: ShardInfo, start: int, stop: int) -> list[RawSample | str]:
        """Samples [start, stop) of a shard; a missing one as the reason it is missing (the
        slots of those samples count it; the read error itself is only logged)."""
        log = self._load_log
        before = log.skips.counts.get("shard_read", 0)
        raws = load_shard_samples(log, shard, start, stop)
        lost = "shard_read" if log.skips.counts.get("shard_read", 0) > before else "truncated"
        self.read_bytes += sum(_payload(r) for r in raws)
        return [lost if r is None else r for r in raws]

    def _locate(self, epoch: int, index: int) -> tuple[int, int, Unit, int]:
        """Where raw position (epoch, index) lives: (group, sample in the group, unit, sample
        in the unit)."""
        plan = self._plan_for(epoch)
        g, offset = plan.group_at(index)
        group = plan.groups[g]
        sample_no = int(group.order[offset])
        u, local = group.locate(sample_no)
        return g, sample_no, self.units[u], local

    def locate_next(self, k: int) -> tuple[ShardInfo, int]:
        """The shard and sample index that slot `k` of the next step starts from (its own
        sample; a bad one's fallback is only known once read). Reads nothing."""
        _, _, unit, local = self._locate(*self._after(self.epoch, self.index, k))
        return self.shards[unit.shard], unit.start + local

    def _raw(self, epoch: int, index: int, whole: bool) -> tuple[RawSample | str, str]:
        """The raw sample at (epoch, index) and where it lives (for messages)."""
        plan = self._plan_for(epoch)
        g, sample_no, unit, local = self._locate(epoch, index)
        group = plan.groups[g]
        shard = self.shards[unit.shard]
        held = self._groups.get((epoch, g))
        if held is None or (whole and not held.whole):
            if len(self._groups) >= 2:  # the current group and the next (a slot's fallback)
                self._groups.pop(next(iter(self._groups)))
            held = _Group(whole or not self.indexed)
            if held.whole:
                first = 0
                for u2 in group.shards:
                    part = self.units[u2]
                    loaded = self._load(self.shards[part.shard], part.start, part.stop)
                    held.samples.update(enumerate(loaded, start=first))
                    first += part.size
            self._groups[(epoch, g)] = held
        if sample_no not in held.samples:
            k = unit.start + local
            held.samples[sample_no] = self._load(shard, k, k + 1)[0]
        return held.samples[sample_no], f"{shard.path}#{unit.start + local}"

    def _prepare(
        self, ctx: SampleContext, raw: RawSample | str, slot: tuple[int, int], where: str
    ) -> tuple[str, torch.Tensor, Any] | None:
        if isinstance(raw, str):
            ctx.skips.record(raw, f"{where}: sample missing ({raw})")
            return None
        self.decoded_bytes += _payload(raw)
        return prepare_sample(ctx, raw, (self.stream, *slot), where)

    def _slot(self, epoch: int, index: int, whole: bool) -> tuple[str, torch.Tensor, Any]:
        """The prepared sample of slot (epoch, index) (see the class docstring)."""
        raw, where = self._raw(epoch, index, whole)
        item = self._prepare(self.ctx, raw, (epoch, index), where)
        e, i, tried = epoch, index, 1
        while item is None:
            if tried > self._plan_for(e).length:
                raise RuntimeError(
                    f"task {self.ctx.task!r}: stream {self.stream} has no usable sample in "
                    f"a whole epoch; skipped so far: {self.ctx.skips.counts}"
                )
            e, i = self._after(e, i)
            raw, where = self._raw(e, i, whole)
            item = self._prepare(self._quiet, raw, (epoch, index), where)
            tried += 1
        fallback = self._quiet.skips.dropped  # the slot trains on it: its drops count
        if fallback:
            self.ctx.skips.drop(fallback)
            fallback.clear()
        return item

    def take_chunk(
        self, n: int, stack: bool = False, part: tuple[int, int] | None = None
    ) -> StreamChunk:
        """This stream's chunk of a step: the next `n` slots, or only slots [lo, hi) of them
        (`part`), prepared; the position advances by `n` either way."""
        lo, hi = part or (0, n)
        before = dict(self.ctx.skips.counts)
        dropped_before = dict(self.ctx.skips.dropped)
        whole = hi - lo >= READ_WHOLE_ABOVE * n
        items = [self._slot(*self._after(self.epoch, self.index, k), whole) for k in range(lo, hi)]
        self.epoch, self.index = self._after(self.epoch, self.index, n, end=True)
        images = [img for _, img, _ in items]
        skipped = _delta(self.ctx.skips.counts, before)
        return StreamChunk(
            stream=self.stream,
            keys=[k for k, _, _ in items],
            images=torch.stack(images) if stack and images else images,
            targets=[t for _, _, t in items],
            position=self.position(),
            skipped=skipped,
            dropped=_delta(self.ctx.skips.dropped, dropped_before),
            read_bytes=self.read_bytes,
            decoded_bytes=self.decoded_bytes,
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
