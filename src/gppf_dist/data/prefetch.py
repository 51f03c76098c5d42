"""Batches on the device before the step asks for them: pinned, copied on a side stream.

`DevicePrefetcher` wraps a task loader. When the step takes a step's batch, the following one is
read at once and its host-to-device copy is issued on a side stream from pinned memory, so it
runs while the device computes this step; a pageable source would make `non_blocking=True` a
blocking copy. Before the step uses a batch, the compute stream waits for its copy (an event, not
a host sync) and the tensors are marked as used there, so the caching allocator cannot hand their
memory out early.

The loader is one step ahead of what the step consumed, so `positions()` and `skipped` report
what the consumed batches left: a checkpoint or a re-plan resumes exactly at the next batch the
step has not used (the prefetched one is read again).
"""

from __future__ import annotations

from collections.abc import Iterator
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

    def __init__(self, loader: Any, device: torch.device, channels_last: bool = False) -> None:
        self.loader = loader
        self.device = device
        self.channels_last = channels_last
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        self._next: _Ready | None = None
        self._positions = loader.positions() if hasattr(loader, "positions") else None
        self._skipped = dict(getattr(loader, "skipped", {}))
        self._dropped = dict(getattr(loader, "dropped", {}))

    def _fetch(self) -> _Ready:
        batch = next(self.loader)
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
        ready = self._next if self._next is not None else self._fetch()
        self._next = None
        if ready.copied is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready.copied)
            _record_stream((ready.batch.images, ready.batch.targets, ready.batch.groups), current)
        self._positions, self._skipped = ready.positions, ready.skipped
        self._dropped = ready.dropped
        try:
            self._next = self._fetch()  # overlaps this step's compute
        except StopIteration:
            self._next = None
        return ready.batch

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
        self._next = None
        close = getattr(self.loader, "close", None)
        if close is not None:
            close()
