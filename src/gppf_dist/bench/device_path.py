"""The host-to-device path on the real device: `gpu-check`'s `device_path` job.

CPU tests run the prefetcher and the timer on stand-ins (`meta`, perf_counter); their CUDA
branches (pinned source, side-stream copy, the compute stream waiting on an event, CUDA-event
timings read after a sync) only run where a GPU is. This job runs them there, checks every
batch arrives bit-identical, and measures how much of the copy the prefetch hides: the time the
step waits for a batch (`next()`) against the time a plain blocking copy of the same batch takes.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from gppf_dist.data.load.prefetch import DevicePrefetcher
from gppf_dist.engine.timing import DeviceTimer
from gppf_dist.tasks.base import Batch


class _SourceLoader:
    """Fixed host batches with the positions/skipped interface of a task loader."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches, self.step = batches, 0

    def __next__(self) -> Batch:
        if self.step == len(self.batches):
            raise StopIteration
        self.step += 1
        return self.batches[self.step - 1]

    def positions(self) -> dict[int, int]:
        return {0: self.step}

    @property
    def skipped(self) -> dict[str, int]:
        return {}


def run(num_batches: int, batch: int, size: int) -> dict[str, Any]:
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    batches = [
        Batch(
            task="t",
            images=torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen),
            targets={"labels": torch.randint(0, 10, (batch,), generator=gen)},
            groups=torch.zeros(batch, dtype=torch.long),
            keys=[],
        )
        for _ in range(num_batches)
    ]
    prefetcher = DevicePrefetcher(_SourceLoader(batches), device, channels_last=True)
    timer = DeviceTimer(device)
    waits, sums, arrived = [], [], []
    for _ in range(num_batches):
        t0 = time.perf_counter()
        got = next(prefetcher)
        waits.append(time.perf_counter() - t0)
        start = timer.mark()
        # Some compute for the next copy to hide behind, on the compute stream.
        x = got.images.float()
        for _ in range(20):
            x = torch.tanh(x * 0.5)
        sums.append(x.sum())
        timer.add(0, start, timer.mark())
        arrived.append(got)
        if got.images.device.type != device.type:
            raise AssertionError(f"batch on {got.images.device}, expected {device}")
    torch.stack(sums).tolist()  # the one sync: after it the events are readable
    compute_s = timer.collect_step(1)[0]
    positions = prefetcher.positions()
    for i, (source, got) in enumerate(zip(batches, arrived, strict=True)):
        same = torch.equal(got.images.cpu(), source.images) and torch.equal(
            got.targets["labels"].cpu(), source.targets["labels"]
        )
        if not same:
            raise AssertionError(f"prefetched batch {i} differs from its source")
    blocking = []
    for b in batches:
        t0 = time.perf_counter()
        b.images.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        blocking.append(time.perf_counter() - t0)
    return {
        "device": str(device),
        "batches": num_batches,
        "batch_mib": round(batches[0].images.numel() / 2**20, 2),
        "positions_after": positions,
        "wait_ms_median": round(1e3 * statistics.median(waits[1:] or waits), 3),
        "blocking_copy_ms_median": round(1e3 * statistics.median(blocking), 3),
        "compute_s_event_timed": round(compute_s, 4),
        "identical": True,
    }
