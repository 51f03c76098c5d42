"""Saving and restoring a run: the engine's state, the topology-free files, the client state,
and the COMPLETE marker that makes a checkpoint count (DESIGN.md §5.6).

The engine is reached through `EngineState` (DeepSpeed's adapter lives in `engine/deepspeed.py`,
the one module that imports DeepSpeed). A `Checkpointer` is made once per run with everything
that does not change between saves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.checkpoint.client_state import ClientState
from gppf_dist.checkpoint.manager import mark_complete, prune, resume_tag, tag_for_step
from gppf_dist.checkpoint.marker import Marker, Topology
from gppf_dist.checkpoint.named_state import has_named_state, load_named_state, save_named_state
from gppf_dist.checkpoint.topology import check_topology
from gppf_dist.model.owners import OwnerMap


class EngineState(Protocol):
    """What a checkpoint needs of the training engine."""

    @property
    def module(self) -> nn.Module: ...

    @property
    def lr_scheduler(self) -> Any: ...

    def save_state(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Collective: every rank writes its part of the engine's state under `directory/tag`."""

    def load_state(
        self, directory: Path, tag: str, *, module_strict: bool, optimizer: bool
    ) -> dict[str, Any]:
        """Load the engine's state; returns the saved client state."""
        ...


@dataclass
class NamedState:
    """What the topology-free save/load needs: ZeRO 0, or the legos under ZeRO 1/2 + EP."""

    optimizer: torch.optim.Optimizer
    """ZeRO 0: the one optimizer. legos_only: the legos' own optimizer."""
    owners: OwnerMap
    writes_legos: bool
    """True on the ranks of EP group 0 (together they hold every lego once)."""
    legos_only: bool = False
    """ZeRO 1/2 with expert parallelism: only the legos' state is ours to save and load."""
    follow_schedule: Callable[[Any], None] | None = None
    """legos_only: aligns the legos' schedule with DeepSpeed's restored one."""


@dataclass
class Checkpointer:
    """Collective save and restore of one run's checkpoints in `<run_dir>/checkpoints`."""

    engine: EngineState
    run_dir: Path
    topology: Topology
    keep: int
    """trainer.keep_checkpoints: complete checkpoints kept after each save."""
    is_main: bool
    named: NamedState | None = None

    @property
    def directory(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self, state: ClientState) -> None:
        """Collective checkpoint of step `state.step` (i.e. after that many iterations)."""
        tag = tag_for_step(state.step)
        self.engine.save_state(self.directory, tag, state.to_dict())
        named = self.named
        if named is not None:
            save_named_state(
                self.engine.module,
                named.optimizer,
                named.owners,
                self.directory / tag,
                write_shared=self.is_main,
                write_legos=named.writes_legos,
                legos_only=named.legos_only,
            )
        dist.barrier()
        if self.is_main:
            marker = Marker(state.step, self.topology, state.costs)
            mark_complete(self.directory, tag, marker.to_json())
            prune(self.directory, self.keep)
        dist.barrier()

    def restore(self, resume: str) -> ClientState | None:
        """Load the checkpoint chosen by `resume` (auto/never/tag); rank 0 picks, all load.

        With named state (ZeRO 0), parameters and optimizer state come from the topology-free
        files, so the EP size may differ from the saving run's. Under ZeRO 1/2 DeepSpeed's
        partitioned files hold the shared parameters' optimizer state and the lego files the
        legos'."""
        choice: list[str | None] = [None]
        if dist.get_rank() == 0:
            choice[0] = resume_tag(self.directory, resume)
        dist.broadcast_object_list(choice, src=0)
        tag = choice[0]
        if tag is None:
            return None
        tag_dir = self.directory / tag
        check_topology(tag_dir, self.topology)
        engine, named = self.engine, self.named
        if named is not None and named.legos_only:
            saved = engine.load_state(self.directory, tag, module_strict=False, optimizer=True)
            load_named_state(engine.module, named.optimizer, named.owners, tag_dir, legos_only=True)
            assert named.follow_schedule is not None
            named.follow_schedule(engine.lr_scheduler)
            return ClientState.from_dict(saved)
        use_named = named is not None and has_named_state(tag_dir)
        saved = engine.load_state(
            self.directory, tag, module_strict=not use_named, optimizer=not use_named
        )
        if use_named:
            assert named is not None
            load_named_state(engine.module, named.optimizer, named.owners, tag_dir)
            # DeepSpeed restored the scheduler, but the groups' current lr is only written by
            # the scheduler's next step(), after the next update: set it now, as the saving
            # run had it.
            scheduler = engine.lr_scheduler
            groups = named.optimizer.param_groups
            for group, lr in zip(groups, scheduler.get_last_lr(), strict=True):
                group["lr"] = lr
        return ClientState.from_dict(saved)
