"""Canonical streams: the pure arithmetic that makes data order a function of the step.

A task's train shards are split into `S` canonical streams, independent of world size: stream `k`
owns the shards whose index `i` satisfies `i % S == k`. With more streams than shards, each shard
is cut into ceil(S / shards) parts of consecutive samples (read by their byte ranges, from the
manifest's sample offsets) and stream `k` owns the parts `j % S == k`: how a dataset happens to be
sharded no longer limits the stream count. Shards and parts are the stream's *units*. A stream is
infinite. In epoch `e` its shards are visited in an order permuted by a seed derived from (seed,
task, stream, e); the shards are taken in consecutive *groups* of `shards_per_group`, and the
samples of one group are permuted together (a group is what a reader holds in memory). A stream's
state is therefore just `StreamPosition(epoch, index)`: the raw sample index within the epoch where
the next step starts. Resuming costs one group read, and any rank can resume any stream.

Per-sample augmentation randomness comes from `sample_rng(seed, task, stream, epoch, index)`, so
it does not depend on which rank reads the stream or on global RNG state.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass

import numpy as np

_TAG_SHARD_ORDER = 1
_TAG_SAMPLE_ORDER = 2
_TAG_AUGMENT = 3


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream's next step starts: epoch and raw sample index within that epoch."""

    epoch: int = 0
    index: int = 0


def task_seed(task: str) -> int:
    """A stable 32-bit integer for a task name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(task.encode("utf-8")).digest()[:4], "little")


def _seed_seq(seed: int, task: str, stream: int, epoch: int, tag: int, *extra: int) -> list[int]:
    return [seed & 0xFFFFFFFF, seed >> 32, task_seed(task), stream, epoch, tag, *extra]


def sample_rng(seed: int, task: str, stream: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation RNG of the sample at (stream, epoch, index)."""
    return np.random.default_rng(_seed_seq(seed, task, stream, epoch, _TAG_AUGMENT, index))


def stream_shards(task: str, num_shards: int, num_streams: int, stream: int) -> list[int]:
    """Shard indices owned by `stream` (i % num_streams == stream)."""
    if num_streams < 1:
        raise ValueError(f"task {task!r}: num_streams must be >= 1, got {num_streams}")
    if num_shards < num_streams:
        raise ValueError(
            f"task {task!r}: split has {num_shards} shards, fewer than num_streams={num_streams}"
        )
    if not 0 <= stream < num_streams:
        raise ValueError(f"task {task!r}: stream id {stream} not in [0, {num_streams})")
    return list(range(stream, num_shards, num_streams))


@dataclass(frozen=True)
class Unit:
    """Samples [start, stop) of shard `shard`: what a stream reads in one piece."""

    shard: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def stream_units(task: str, sizes: list[int], num_streams: int, stream: int) -> list[Unit]:
    """The units of `stream`: its whole shards (`stream_shards`) when the split has at least
    `num_streams` shards, else its parts of shards. `sizes`: each shard's sample count."""
    if len(sizes) >= num_streams or num_streams < 1:
        return [Unit(i, 0, sizes[i]) for i in stream_shards(task, len(sizes), num_streams, stream)]
    if not 0 <= stream < num_streams:
        raise ValueError(f"task {task!r}: stream id {stream} not in [0, {num_streams})")
    # Part j is part j % per of shard j // per; the stream owns parts j = stream (mod S): its
    # own ones computed directly, never all of them (S streams x parts would be quadratic).
    per = -(-num_streams // len(sizes))
    mine = []
    for j in range(stream, len(sizes) * per, num_streams):
        i, p = divmod(j, per)
        unit = Unit(i, sizes[i] * p // per, sizes[i] * (p + 1) // per)
        if unit.size > 0:
            mine.append(unit)
    if not mine:
        raise ValueError(
            f"task {task!r}: {sum(sizes)} samples in {len(sizes)} shards cannot fill "
            f"num_streams={num_streams} streams"
        )
    return mine


@dataclass(frozen=True)
class ShardGroup:
    """Consecutive shards of an epoch whose samples are permuted together."""

    shards: tuple[int, ...]
    """Global shard indices, in epoch order."""
    sizes: tuple[int, ...]
    """Manifest sample count of each shard."""
    order: np.ndarray
    """Permutation of range(sum(sizes)): position -> sample index within the concatenated group."""

    def locate(self, sample: int) -> tuple[int, int]:
        """(shard index, local index) of concatenated-group sample `sample`."""
        start = 0
        for shard, size in zip(self.shards, self.sizes, strict=True):
            if sample < start + size:
                return shard, sample - start
            start += size
        raise IndexError(f"sample {sample} outside group of {start}")


@dataclass(frozen=True)
class EpochPlan:
    """The visiting order of one stream in one epoch."""

    epoch: int
    groups: tuple[ShardGroup, ...]
    starts: tuple[int, ...]
    """Epoch index of each group's first sample."""
    length: int

    def group_at(self, index: int) -> tuple[int, int]:
        """(group number, offset within group) of raw epoch index `index`."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} outside epoch of {self.length} samples")
        g = bisect.bisect_right(self.starts, index) - 1
        return g, index - self.starts[g]


def epoch_plan(
    *,
    task: str,
    seed: int,
    stream: int,
    epoch: int,
    shard_ids: list[int],
    shard_sizes: dict[int, int],
    shards_per_group: int = 1,
) -> EpochPlan:
    """The deterministic shard/sample order of `stream` in `epoch`."""
    if shards_per_group < 1:
        raise ValueError(f"shards_per_group must be >= 1, got {shards_per_group}")
    rng = np.random.default_rng(_seed_seq(seed, task, stream, epoch, _TAG_SHARD_ORDER))
    ordered = [shard_ids[i] for i in rng.permutation(len(shard_ids))]
    groups: list[ShardGroup] = []
    starts: list[int] = []
    total = 0
    for g, first in enumerate(range(0, len(ordered), shards_per_group)):
        shards = tuple(ordered[first : first + shards_per_group])
        sizes = tuple(shard_sizes[s] for s in shards)
        n = sum(sizes)
        if n == 0:
            continue
        grng = np.random.default_rng(_seed_seq(seed, task, stream, epoch, _TAG_SAMPLE_ORDER, g))
        groups.append(ShardGroup(shards, sizes, grng.permutation(n)))
        starts.append(total)
        total += n
    if total == 0:
        raise ValueError(f"task {task!r}: stream {stream} has no samples (shards {shard_ids})")
    return EpochPlan(epoch, tuple(groups), tuple(starts), total)


def eval_range(num_samples: int, num_parts: int, part: int) -> tuple[int, int]:
    """The contiguous [start, stop) of global sample indices that eval part `part` covers."""
    if num_parts < 1 or not 0 <= part < num_parts:
        raise ValueError(f"eval part must satisfy 0 <= part < num_parts, got {part}/{num_parts}")
    return num_samples * part // num_parts, num_samples * (part + 1) // num_parts
