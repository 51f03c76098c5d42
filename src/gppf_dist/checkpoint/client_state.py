"""What a checkpoint holds besides tensors: where training stands, typed.

Saved through DeepSpeed's `client_state` (a dict, keys as the field names) beside the engine's
state. Data positions are kept per (task, canonical stream), not per rank, so a run resumes
exactly at another world size: the new plan simply hands the streams to different ranks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

Positions = dict[str, dict[int, Any]]
"""task -> canonical stream id -> the stream's position (`data/load/streams.py`)."""


@dataclass
class ClientState:
    step: int
    """Completed iterations."""
    data_positions: Positions
    wandb_run_id: str | None
    world_size: int
    costs: dict[str, Any] | None = None
    """The measured cost table (`simt/costs.py`)."""
    plan: dict[str, Any] | None = None
    """The task-to-rank plan in force (`simt/plan.py`'s `Plan.to_state`)."""
    rng: dict[str, Any] | None = None
    """Python, NumPy and torch CPU generator states (`rng_state`)."""

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value, values as they are (positions stay `StreamPosition`s)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ClientState:
        """From a saved client state; keys a checkpoint lacks take their defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in state.items() if k in known}
        values.setdefault("step", 0)
        values.setdefault("data_positions", {})
        values.setdefault("wandb_run_id", None)
        values.setdefault("world_size", 0)
        return cls(**values)


def gather_positions(local: Positions, world_size: int) -> Positions:
    """Merge every rank's per-stream positions (collective)."""
    parts: list[Positions | None] = [None] * world_size
    dist.all_gather_object(parts, local)
    merged: Positions = {}
    for part in parts:
        assert part is not None
        for task, streams in part.items():
            merged.setdefault(task, {}).update(streams)
    return merged


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict[str, Any] | None) -> None:
    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
