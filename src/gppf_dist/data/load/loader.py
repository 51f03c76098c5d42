"""Deterministic, resumable per-task loaders over canonical streams (see `streams`).

`TaskLoader` reads the streams a rank is assigned and yields, per step, `per_stream_batch`
samples from each, concatenated in `stream_ids` order. Because every stream's position is a
`StreamPosition` and all randomness is derived from (seed, task, stream, epoch, index), the
global batch at a step does not depend on how streams are spread over ranks, and
`TaskLoader(..., start_positions=loader.positions())` continues exactly where a loader stopped.

A step's share of a stream is its next `per_stream_batch` *slots*; a slot holds the sample at
its raw position, or when that one is bad (counted in `.skipped` by reason) the next good sample
after it, so batches are always full, the skip pattern is deterministic, and a slice of a share
(`take`, a plan's piece on one rank) prepares only its own slots, reading them by byte range when
it is a small part (`stream_reader.READ_WHOLE_ABOVE`). `read_amplification` reports bytes read /
bytes decoded.
`iter_eval_batches` (re-exported from `eval_loader`) is one plain pass over a split part.
"""

from __future__ import annotations

from pathlib import Path

from gppf_dist.data.decode.jpeg import default_decoder
from gppf_dist.data.decode.sample import SkipCounter
from gppf_dist.data.format.manifest import Manifest, ShardInfo
from gppf_dist.data.load.eval_loader import EvalIterator, iter_eval_batches
from gppf_dist.data.load.pipeline import SampleContext
from gppf_dist.data.load.stream_reader import StreamChunk, StreamReader, assemble
from gppf_dist.data.load.streams import StreamPosition, stream_units
from gppf_dist.data.load.workers import WorkerPool
from gppf_dist.tasks.base import Batch, TaskSpec, TaskType

__all__ = ["EvalIterator", "StreamPosition", "TaskLoader", "iter_eval_batches"]


class TaskLoader:
    """Per-step batches of one task from the canonical streams `stream_ids` (see module doc).

    With `num_workers > 0` the streams are read by that many worker processes (see `workers`);
    batches, `positions()` and `skipped` are exactly those of `num_workers=0`. Call `close()` to
    stop the workers early (they also stop when the loader is garbage collected).
    """

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
        num_workers: int = 0,
        mp_context: str | None = None,
        take: tuple[int, int] | None = None,
        micro_batch: int = 0,
        decoder: str = "",
    ) -> None:
        if per_stream_batch < 1:
            raise ValueError(
                f"task {task!r}: per_stream_batch must be >= 1, got {per_stream_batch}"
            )
        if num_workers < 0:
            raise ValueError(f"task {task!r}: num_workers must be >= 0, got {num_workers}")
        if len(set(stream_ids)) != len(stream_ids):
            raise ValueError(f"task {task!r}: stream_ids has duplicates: {stream_ids}")
        whole = (0, per_stream_batch * len(stream_ids))
        take = take or whole
        if not (0 <= take[0] < take[1] <= whole[1] or take == whole):
            raise ValueError(
                f"task {task!r}: samples {list(take)} are not within the {whole[1]} samples of "
                f"streams {list(stream_ids)}"
            )
        self.take = take
        if micro_batch < 0:
            raise ValueError(f"task {task!r}: micro_batch must be >= 0, got {micro_batch}")
        self.micro_batch = micro_batch
        self._pending: list[Batch] = []
        self._skipped: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        # The slots of each stream's share this loader trains on (the others are other ranks').
        n = per_stream_batch
        self._parts = {
            stream: (min(max(take[0] - k * n, 0), n), min(max(take[1] - k * n, 0), n))
            for k, stream in enumerate(stream_ids)
        }
        tm = manifest.task(task)
        shards = tm.shards(split)
        sizes = [s.samples for s in shards]
        unindexed = [s.path for s in shards if not s.has_offsets]
        if len(shards) < num_streams and unindexed:
            raise ValueError(
                f"task {task!r}: {len(shards)} shards, fewer than num_streams={num_streams}, and "
                f"shard {unindexed[0]!r} has no sample offsets to cut it into parts: run "
                "`gppf-shards index --root <shard root>`"
            )
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
            needs_mask=task_type.needs_mask,
            skips=SkipCounter(task),
            decoder=decoder or default_decoder(),
        )
        start_positions = start_positions or {}
        starts: dict[int, StreamPosition] = {}
        for stream in self.stream_ids:
            pos = start_positions.get(stream, StreamPosition())
            if pos.epoch < 0 or pos.index < 0:
                raise ValueError(f"task {task!r}: stream {stream} start position {pos} is negative")
            starts[stream] = pos
        self._positions = dict(starts)
        self._bytes: dict[int, tuple[int, int]] = {}
        self._readers: list[StreamReader] = []
        self._pool: WorkerPool | None = None
        units = {s: stream_units(task, sizes, num_streams, s) for s in self.stream_ids}
        used = {u.shard: shards[u.shard] for us in units.values() for u in us}
        if num_workers > 0 and self.stream_ids:
            self._pool = WorkerPool(
                ctx=self._ctx,
                shards=used,
                units=units,
                stream_ids=self.stream_ids,
                num_workers=num_workers,
                per_stream_batch=per_stream_batch,
                shards_per_group=shards_per_group,
                starts=starts,
                parts=self._parts,
                mp_context=mp_context,
            )
        else:
            for stream in self.stream_ids:
                self._readers.append(
                    StreamReader(
                        self._ctx, stream, used, units[stream], shards_per_group, starts[stream]
                    )
                )

    def __iter__(self) -> TaskLoader:
        return self

    def __next__(self) -> Batch:
        """The next batch: the step's slice, or with `micro_batch` its next micro-batch (a step
        then yields ceil(slice / micro_batch) batches in order)."""
        if not self._pending:
            self._pending = self._read_step()
        return self._pending.pop(0)

    def _read_step(self) -> list[Batch]:
        if not self.stream_ids:
            raise StopIteration
        if self._pool is not None:
            by_stream, skipped = self._pool.next_step()
            self._ctx.skips.add(skipped)
            chunks = [by_stream[s] for s in self.stream_ids]
        else:
            chunks = [
                r.take_chunk(self.per_stream_batch, part=self._parts[r.stream])
                for r in self._readers
            ]
        for c in chunks:
            self._positions[c.stream] = c.position
            self._bytes[c.stream] = (c.read_bytes, c.decoded_bytes)
            for reason, n in c.skipped.items():
                self._skipped[reason] = self._skipped.get(reason, 0) + n
            for kind, n in c.dropped.items():
                self._dropped[kind] = self._dropped.get(kind, 0) + n
        parts = [c for c in chunks if c.keys]
        if not self.micro_batch:
            return [assemble(self.task, self.task_type, parts)]
        size = self.take[1] - self.take[0]
        return [
            assemble(
                self.task, self.task_type, self._sliced(parts, lo, min(lo + self.micro_batch, size))
            )
            for lo in range(0, size, self.micro_batch)
        ]

    @staticmethod
    def _sliced(chunks: list[StreamChunk], start: int, stop: int) -> list[StreamChunk]:
        """Samples [start, stop) of the chunks' concatenation."""
        out, offset = [], 0
        for c in chunks:
            n = len(c.keys)
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            if lo < hi:
                out.append(c.part(lo, hi))
            offset += n
        return out

    def next_slots(self) -> list[tuple[int, ShardInfo, int]]:
        """(stream, shard, sample index) that each slot of the next step this loader prepares
        starts from, in order; reads nothing. In-process readers only (with decode workers the
        readers live in the workers): empty there."""
        return [
            (r.stream, *r.locate_next(k))
            for r in self._readers
            for k in range(*self._parts[r.stream])
        ]

    def positions(self) -> dict[int, StreamPosition]:
        """Per stream, where the next step starts (merge the dicts of all ranks to checkpoint)."""
        return dict(self._positions)

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped so far (by reason) in the steps this loader returned, in the slots it
        trains on (so the counts summed over the ranks sharing a stream are the run's)."""
        return dict(self._skipped)

    @property
    def dropped(self) -> dict[str, int]:
        """Targets (boxes, keypoints) the geometry dropped from the kept samples of the steps
        returned so far, by kind (counted like `skipped`, apart from it: no sample was lost)."""
        return dict(self._dropped)

    @property
    def read_amplification(self) -> float:
        """Sample bytes read from shards / sample bytes decoded, so far (1.0 before any read)."""
        read = sum(r for r, _ in self._bytes.values())
        decoded = sum(d for _, d in self._bytes.values())
        return read / decoded if decoded else 1.0

    def close(self) -> None:
        """Stop worker processes, if any; the loader cannot be iterated afterwards."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
            self.stream_ids = []
