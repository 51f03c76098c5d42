"""Loader worker processes that keep `TaskLoader`'s exact, per-step semantics.

A rank's streams are dealt to `W` worker processes: the i-th entry of `stream_ids` goes to worker
`i % W` (and `W` is capped at the number of streams, so no worker is ever empty). Each worker
builds its own `StreamReader`s at the start positions and yields, per step, one `WorkerChunk`:
its streams' `StreamChunk`s, the positions after the step and the skip counts the step caused.
A `torch.utils.data.DataLoader` over an `IterableDataset` runs the workers; it returns worker
outputs in strict round-robin order, so the main process reads exactly one chunk per worker per
step and reassembles the batch in `stream_ids` order. Everything random is derived from the
sample's (seed, task, stream, epoch, index), so the batches are bit-identical to `num_workers=0`,
and because positions and skip counts travel with the chunk they describe, `positions()` and
`skipped` reflect the steps consumed, not the ones prefetched. A crashed worker raises in the
main process (DataLoader's liveness check), so nothing waits forever.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gppf_dist.data.decode.sample import SkipCounter
from gppf_dist.data.format.manifest import ShardInfo
from gppf_dist.data.load.pipeline import SampleContext
from gppf_dist.data.load.stream_reader import StreamChunk, StreamReader
from gppf_dist.data.load.streams import StreamPosition, Unit


@dataclass
class WorkerChunk:
    """What one worker contributes to one step."""

    worker: int
    step: int
    chunks: list[StreamChunk]
    """Each carries the samples skipped (by reason) while reading it."""


def deal_streams(stream_ids: list[int], num_workers: int) -> list[list[int]]:
    """Streams per worker: entry i of `stream_ids` goes to worker i % W, W <= len(stream_ids)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    workers = min(num_workers, len(stream_ids))
    return [list(stream_ids[w::workers]) for w in range(workers)]


class _StepChunks(IterableDataset):
    """Per-step chunks of the streams dealt to the current worker process (infinite). It holds
    only the units of the rank's streams and their shards: what a (spawned) worker receives
    does not grow with the task's shard list."""

    def __init__(
        self,
        ctx: SampleContext,
        shards: Mapping[int, ShardInfo],
        units: Mapping[int, list[Unit]],
        per_worker: list[list[int]],
        per_stream_batch: int,
        shards_per_group: int,
        starts: dict[int, StreamPosition],
        parts: dict[int, tuple[int, int]],
    ) -> None:
        self.ctx = ctx
        self.shards = shards
        self.units = units
        self.per_worker = per_worker
        self.per_stream_batch = per_stream_batch
        self.shards_per_group = shards_per_group
        self.starts = starts
        self.parts = parts

    def __iter__(self) -> Iterator[WorkerChunk]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        ctx = replace(self.ctx, skips=SkipCounter(self.ctx.task))  # this process's own counts
        readers = [
            StreamReader(
                ctx,
                stream,
                self.shards,
                self.units[stream],
                self.shards_per_group,
                self.starts[stream],
            )
            for stream in self.per_worker[worker]
        ]
        step = 0
        while True:
            chunks = [
                r.take_chunk(self.per_stream_batch, stack=True, part=self.parts[r.stream])
                for r in readers
            ]
            yield WorkerChunk(worker, step, chunks)
            step += 1


class WorkerPool:
    """Streams read by worker processes; `next_step()` returns the step's chunks by stream."""

    def __init__(
        self,
        *,
        ctx: SampleContext,
        shards: Mapping[int, ShardInfo],
        units: Mapping[int, list[Unit]],
        stream_ids: list[int],
        num_workers: int,
        per_stream_batch: int,
        shards_per_group: int,
        starts: dict[int, StreamPosition],
        parts: dict[int, tuple[int, int]] | None = None,
        prefetch_steps: int = 2,
        mp_context: str | None = None,
    ) -> None:
        self.per_worker = deal_streams(stream_ids, num_workers)
        parts = parts or {s: (0, per_stream_batch) for s in stream_ids}
        self._dataset = _StepChunks(
            ctx,
            shards,
            units,
            self.per_worker,
            per_stream_batch,
            shards_per_group,
            starts,
            parts,
        )
        self._prefetch = prefetch_steps
        self._mp_context = mp_context
        self._it: Iterator[WorkerChunk] | None = None
        self._step = 0

    def _start(self) -> Iterator[WorkerChunk]:
        with warnings.catch_warnings():
            # The worker count is the caller's decision; DataLoader's cpu-count advice is noise.
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            loader = DataLoader(
                self._dataset,
                batch_size=None,
                num_workers=len(self.per_worker),
                prefetch_factor=self._prefetch,
                multiprocessing_context=self._mp_context,
                worker_init_fn=self.worker_init(),
            )
            return iter(loader)

    def worker_init(self) -> Callable[[int], None] | None:
        """Spawned workers (`data.decoder=gpu`) start on cuda:0 whatever this rank's GPU: bind
        them to this process's current device, so each rank decodes on its own GPU."""
        if self._mp_context != "spawn" or not torch.cuda.is_available():
            return None
        return functools.partial(_bind_cuda_device, torch.cuda.current_device())

    def next_step(self) -> tuple[dict[int, StreamChunk], dict[str, int]]:
        """The next step's chunk of every stream, and the skip counts it caused."""
        if self._it is None:
            self._it = self._start()
        by_stream: dict[int, StreamChunk] = {}
        skipped: dict[str, int] = {}
        for worker in range(len(self.per_worker)):
            got = next(self._it)
            assert (got.worker, got.step) == (worker, self._step), (got.worker, got.step)
            for chunk in got.chunks:
                by_stream[chunk.stream] = chunk
            for chunk in got.chunks:
                for reason, n in chunk.skipped.items():
                    skipped[reason] = skipped.get(reason, 0) + n
        self._step += 1
        return by_stream, skipped

    def close(self) -> None:
        """Stop the worker processes (also happens when the pool is garbage collected)."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _bind_cuda_device(index: int, worker_id: int) -> None:
    torch.cuda.set_device(index)
