"""The loaders of one rank's planned work: opened from a plan at saved stream positions, asked
for their positions at checkpoints, closed and reopened when the plan changes.

Each loader's batches arrive on the compute device a step ahead (`prefetch.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from gppf_dist.config.schema import RunConfig
from gppf_dist.data.decode.jpeg import default_decoder
from gppf_dist.data.format.manifest import Manifest
from gppf_dist.data.load.loader import TaskLoader
from gppf_dist.data.load.prefetch import DevicePrefetcher
from gppf_dist.tasks.base import Batch, TaskSpec, TaskType

Positions = dict[str, dict[int, Any]]


class PlannedWork(Protocol):
    """One task's share of a rank's step (`simt/plan.py`'s `Work`)."""

    task: str
    stream_ids: tuple[int, ...]
    local_batch: int
    offset: int


class TaskLoaders:
    """task -> its loader on this rank, for the tasks the current plan gives the rank.

    `active` is the mapping the step reads; it is updated in place by `open` and `close`."""

    def __init__(
        self,
        cfg: RunConfig,
        manifest: Manifest,
        specs: dict[str, TaskSpec],
        types: dict[str, TaskType],
        device: torch.device,
    ) -> None:
        self.cfg, self.manifest, self.specs, self.types = cfg, manifest, specs, types
        self.device = device
        self.active: dict[str, Iterator[Batch]] = {}

    def open(self, works: Iterable[PlannedWork], positions: Positions) -> None:
        """A loader for each of this rank's `works` (its plan's share), starting at the saved
        positions (task -> stream id -> position; streams not in it start at the beginning)."""
        self.close()
        cfg = self.cfg
        active = cfg.simt.active_tasks()
        for work in works:
            saved = {int(k): v for k, v in positions.get(work.task, {}).items()}
            per_stream = active[work.task].batch_size // cfg.data.streams_per_task
            loader = TaskLoader(
                root=Path(cfg.data.root),
                manifest=self.manifest,
                task=work.task,
                spec=self.specs[work.task],
                task_type=self.types[work.task],
                num_streams=cfg.data.streams_per_task,
                stream_ids=list(work.stream_ids),
                per_stream_batch=per_stream,
                seed=cfg.trainer.seed,
                train=True,
                start_positions={s: saved[s] for s in work.stream_ids if s in saved} or None,
                num_workers=cfg.data.num_workers,
                shards_per_group=cfg.data.shards_per_group,
                decoder=cfg.data.decoder,
                # CUDA cannot be initialised in forked decode workers
                mp_context="spawn" if decoder_of(cfg.data.decoder) == "gpu" else None,
                take=(work.offset, work.offset + work.local_batch),
                micro_batch=active[work.task].max_local_batch,
            )
            channels_last = cfg.trainer.channels_last
            self.active[work.task] = DevicePrefetcher(loader, self.device, channels_last)

    def positions(self) -> Positions:
        """This rank's per-stream data positions (where the next step starts)."""
        return {task: loader.positions() for task, loader in self.active.items()}  # type: ignore[attr-defined]

    def close(self) -> None:
        for loader in self.active.values():
            close = getattr(loader, "close", None)
            if close is not None:
                close()
        self.active.clear()


def decoder_of(configured: str) -> str:
    """The decoder `data.decoder`=`configured` means (empty: `$GPPF_DECODER`, else turbo)."""
    return configured or default_decoder()
