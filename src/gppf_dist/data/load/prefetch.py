"""Batches on the device before the step asks for them: read, pinned and copied off the step's path.

`DevicePrefetcher` wraps a task loader. When the step takes a step's batch, the prefetcher hands
it out at once and asks the fetch thread for the following one: the thread reads it from the
loader (a blocking `next`), pins it and issues its host-to-device copy on a side stream, while the
step launches this step's kernels. The step waits for the loader only when the loader is slower
than a whole step. A pageable source would make `non_blocking=True` a blocking copy, hence the
pinning. Before the step uses a batch, the compute stream waits for its copy (an event, not a
host sync) and the tensors are marked as used there, so the caching allocator cannot hand their
memory out early.

One fetch thread serves every prefetcher of the process, in the order they ask, and every loader
read goes through it (the first one too, while the step waits): loaders never run concurrently
with each other, they are read in the order the program asks for batches, and a loader that
forks its decode workers does so while the step's thread is idle.

The loader is one step ahead of what the step consumed, so `positions()` and `skipped` report
what the consumed batches left: a checkpoint or a re-plan resumes exactly at the next batch the
step has not used (the prefetched one is read again). `close()` waits for a fetch in flight
before it closes the loader.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any

import torch

from gppf_dist.tasks.base import Batch, move_to


@dataclass
class _Ready:
    batch: Batch
    positions: Any
    skipped: dict[str, int]
    dropped: dict[str, int]
    copied: Any  # CUDA event after the copy, or None


def _pinned(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.pin_memory()
    if isinstance(obj, dict):
        return {k: _pinned(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_pinned(v) for v in obj)
    return obj


def _record_stream(obj: Any, stream: Any) -> None:
    if isinstance(obj, torch.Tensor):
        obj.record_stream(stream)
    elif isinstance(obj, dict):
        for v in obj.values():
            _record_stream(v, stream)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _record_stream(v, stream)


def batch_to_device(batch: Batch, device: torch.device, channels_last: bool) -> Batch:
    """Images, targets and groups on `device` (non-blocking; from pinned memory on CUDA)."""
    images = batch.images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return replace(
        batch,
        images=images,
        targets=move_to(batch.targets, device),
        groups=batch.groups.to(device, non_blocking=True),
    )


class DevicePrefetcher:
    """A task loader whose batches arrive on `device` one step ahead (see module docstring)."""

    CLOSE_WAIT_S = 60.0
    """How long `close()` waits for a fetch in flight before closing the loader under it."""

    def __init__(
        self,
        loader: Any,
        device: torch.device,
        channels_last: bool = False,
        ahead: bool | None = None,
    ) -> None:
        self.loader = loader
        self.device = device
        self.channels_last = channels_last
        self.ahead = device.type != "cpu" if ahead is None else ahead
        """Read the next batch while the step computes. Not by default on the CPU, where the
        step's own threads use the cores (measured on the 2-core demo: 0.14 s a step ahead,
        0.12 s in turn); a loader with decode workers still reads ahead in them."""
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        self._next: Future[_Ready | None] | None = None
        self._positions = loader.positions() if hasattr(loader, "positions") else None
        self._skipped = dict(getattr(loader, "skipped", {}))
        self._dropped = dict(getattr(loader, "dropped", {}))

    def _fetch(self) -> _Ready | None:
        """The loader's next batch on the device (its copy issued), or None at the end."""
        try:
            batch = next(self.loader)
        except StopIteration:
            return None
        positions = self.loader.positions() if hasattr(self.loader, "positions") else None
        skipped = dict(getattr(self.loader, "skipped", {}))
        dropped = dict(getattr(self.loader, "dropped", {}))
        if not self._cuda:
            return _Ready(batch_to_device(batch, self.device, self.channels_last), positions,
                          skipped, dropped, None)  # fmt: skip
        batch = replace(
            batch,
            images=batch.images.pin_memory(),
            targets=_pinned(batch.targets),
            groups=batch.groups.pin_memory(),
        )
        with torch.cuda.stream(self._stream):
            moved = batch_to_device(batch, self.device, self.channels_last)
            copied = torch.cuda.Event()
            copied.record()
        return _Ready(moved, positions, skipped, dropped, copied)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        pending, self._next = self._next, None
        ready = (pending or _FETCHER.submit(self._fetch)).result()
        if ready is None:
            raise StopIteration
        if ready.copied is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready.copied)
            _record_stream((ready.batch.images, ready.batch.targets, ready.batch.groups), current)
        self._positions, self._skipped = ready.positions, ready.skipped
        self._dropped = ready.dropped
        if self.ahead:  # the following batch is read, pinned and copied during this step
            self._next = _FETCHER.submit(self._fetch)
        return ready.batch

    def wait_prefetched(self) -> None:
        """Block until the batch in flight has been fetched (tests; errors surface at `next`)."""
        if self._next is not None:
            self._next.exception()

    def positions(self) -> Any:
        """What the consumed batches left: where the next unconsumed batch starts."""
        return dict(self._positions) if self._positions is not None else None

    @property
    def skipped(self) -> dict[str, int]:
        """Skip counts of the consumed batches."""
        return dict(self._skipped)

    @property
    def dropped(self) -> dict[str, int]:
        """Dropped-target counts of the consumed batches."""
        return dict(self._dropped)

    def close(self) -> None:
        pending, self._next = self._next, None
        if pending is not None:
            # a fetch in flight uses the loader: let it finish (its batch is dropped); a loader
            # stuck in `next` is closed under it after the wait, which is what unblocks it
            with contextlib.suppress(FutureTimeout):
                pending.exception(timeout=self.CLOSE_WAIT_S)
        close = getattr(self.loader, "close", None)
        if close is not None:
            close()


class _FetchThread:
    """A daemon thread running submitted reads one at a time, in submission order. A daemon, so
    a loader stuck in `next` never holds up the interpreter's exit (a pool's thread is joined
    at exit); started on first use, and again in a forked child that uses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Any, Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()  # a forked child's copy may hold stale items
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="gppf-prefetch", daemon=True
                )
                self._thread.start()
            self._queue.put((fn, future))
        return future

    @staticmethod
    def _run(requests: queue.SimpleQueue[tuple[Any, Future[Any]]]) -> None:
        while True:
            fn, future = requests.get()
            try:
                future.set_result(fn())
            except BaseException as err:  # re-raised in the step's thread, at its next()
                future.set_exception(err)


_FETCHER = _FetchThread()
"""The process's fetch thread (see the module docstring)."""
