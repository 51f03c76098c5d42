"""Batches on the device before the step asks for them: read, pinned and copied off the step's path.

`DevicePrefetcher` wraps a task loader. When the step takes a step's batch, the prefetcher hands
it out at once and asks its fetch thread for the following one: the thread reads it from the
loader (a blocking `next`), pins it and issues its host-to-device copy on a side stream, while the
step launches this step's kernels. The step never waits for the loader except when the loader is
slower than a whole step. A pageable source would make `non_blocking=True` a blocking copy, hence
the pinning. Before the step uses a batch, the compute stream waits for its copy (an event, not a
host sync) and the tensors are marked as used there, so the caching allocator cannot hand their
memory out early.

The loader is one step ahead of what the step consumed, so `positions()` and `skipped` report
what the consumed batches left: a checkpoint or a re-plan resumes exactly at the next batch the
step has not used (the prefetched one is read again). Only the fetch thread calls the loader's
`next` once the first batch is out; `close()` waits for a fetch in flight before it closes the
loader.
"""

from __future__ import annotations

import contextlib
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

    def __init__(self, loader: Any, device: torch.device, channels_last: bool = False) -> None:
        self.loader = loader
        self.device = device
        self.channels_last = channels_last
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
        ready = pending.result() if pending is not None else self._fetch()
        if ready is None:
            raise StopIteration
        if ready.copied is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready.copied)
            _record_stream((ready.batch.images, ready.batch.targets, ready.batch.groups), current)
        self._positions, self._skipped = ready.positions, ready.skipped
        self._dropped = ready.dropped
        # the following batch is read, pinned and copied while the step computes this one
        self._next = self._fetch_in_background()
        return ready.batch

    def _fetch_in_background(self) -> Future[_Ready | None]:
        """`_fetch` on a daemon thread (one per step, so a loader stuck in `next` can never hold
        up the interpreter's exit, as a pool's joined thread would)."""
        future: Future[_Ready | None] = Future()

        def run() -> None:
            try:
                future.set_result(self._fetch())
            except BaseException as err:  # re-raised in the step's thread, at its next()
                future.set_exception(err)

        threading.Thread(target=run, name="gppf-prefetch", daemon=True).start()
        return future

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
