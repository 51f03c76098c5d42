"""Compute time measured on the device's own clock, without making the host wait for it.

On CUDA, `time.perf_counter()` around a forward measures kernel *launches*: the host runs ahead
of the device, and a task's real time lands on whatever waits next. CUDA events are recorded in
the stream instead, and read only once they are known to have completed: after the step's
end-of-step sync (`engine/step.py`), so reading them adds no sync. A step's timings therefore
reach the (all-reduced) statistics of the *next* step; the cost planner only needs them every
`simt.replan_every` steps. On CPU the same class uses `perf_counter` (work runs synchronously),
with the same one-step delay, so both devices take one code path.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class DeviceTimer:
    """Intervals per slot (a task index, or a per-rank total), resolved one step late."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pending: list[tuple[int, Any, Any]] = []
        self.last: list[float] | None = None
        """Seconds per slot of the last collected step (None before the first)."""

    def mark(self) -> Any:
        """A point in the device's work queue (CUDA event) or in time (CPU)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def add(self, slot: int, start: Any, end: Any) -> None:
        self._pending.append((slot, start, end))

    def collect_step(self, num_slots: int) -> list[float]:
        """Seconds per slot of every interval added since the last call, kept in `last`. Call
        it only after a host sync that followed those intervals (CUDA events have completed,
        so reading them does not wait)."""
        out = [0.0] * num_slots
        for slot, start, end in self._pending:
            out[slot] += start.elapsed_time(end) / 1e3 if self.cuda else end - start
        self._pending = []
        self.last = out
        return out
