"""Saving and restoring a run: DeepSpeed state + SIMT client state (step, data positions, W&B id).

Data positions are kept per (task, canonical stream), not per rank, so a run resumes exactly at
another world size: the new plan simply hands the streams to different ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.checkpoint.manager import find_latest, mark_complete, prune, tag_for_step
from gppf_dist.checkpoint.topology import Topology, check_topology
from gppf_dist.engine.deepspeed import load_checkpoint, save_checkpoint
from gppf_dist.engine.named_state import has_named_state, load_named_state, save_named_state

Positions = dict[str, dict[int, Any]]


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


def save(
    engine: Any,
    run_dir: Path,
    step: int,
    positions: Positions,
    wandb_id: str,
    topology: Topology,
    keep: int,
    is_main: bool,
    extra: dict[str, Any] | None = None,
    named: NamedState | None = None,
) -> None:
    """Collective checkpoint of step `step` (i.e. after `step` completed iterations)."""
    world_size = topology.world_size
    ckpt_dir = run_dir / "checkpoints"
    tag = tag_for_step(step)
    client_state = {
        "step": step,
        "data_positions": positions,
        "wandb_run_id": wandb_id,
        "world_size": world_size,
        **(extra or {}),
    }
    save_checkpoint(engine, ckpt_dir, tag, client_state)
    if named is not None:
        save_named_state(
            engine.module,
            named.optimizer,
            named.owners,
            ckpt_dir / tag,
            write_shared=is_main,
            write_legos=named.writes_legos,
            legos_only=named.legos_only,
        )
    dist.barrier()
    if is_main:
        info = {"step": step, **asdict(topology), "costs": (extra or {}).get("costs")}
        mark_complete(ckpt_dir, tag, info)
        prune(ckpt_dir, keep)
    dist.barrier()


def resume_tag(ckpt_dir: Path, resume: str) -> str | None:
    """The checkpoint tag that `resume` (auto/never/tag) picks in `ckpt_dir`, if any."""
    if resume == "never":
        return None
    return find_latest(ckpt_dir) if resume == "auto" else resume


def restore(
    engine: Any,
    run_dir: Path,
    resume: str,
    topology: Topology,
    named: NamedState | None = None,
) -> dict[str, Any] | None:
    """Load the checkpoint chosen by `resume` (auto/never/tag); rank 0 picks, all ranks load.

    With named state (ZeRO 0), parameters and optimizer state come from the topology-free files,
    so the EP size may differ from the saving run's. Under ZeRO 1/2 DeepSpeed's partitioned
    files hold the shared parameters' optimizer state and the lego files the legos'."""
    ckpt_dir = run_dir / "checkpoints"
    choice: list[str | None] = [None]
    if dist.get_rank() == 0:
        choice[0] = resume_tag(ckpt_dir, resume)
    dist.broadcast_object_list(choice, src=0)
    tag = choice[0]
    if tag is None:
        return None
    check_topology(ckpt_dir / tag, topology)
    if named is not None and named.legos_only:
        state = load_checkpoint(engine, ckpt_dir, tag, module_strict=False, optimizer=True)
        load_named_state(
            engine.module, named.optimizer, named.owners, ckpt_dir / tag, legos_only=True
        )
        assert named.follow_schedule is not None
        named.follow_schedule(engine.lr_scheduler)
        return state
    use_named = named is not None and has_named_state(ckpt_dir / tag)
    state = load_checkpoint(
        engine, ckpt_dir, tag, module_strict=not use_named, optimizer=not use_named
    )
    if use_named:
        assert named is not None
        load_named_state(engine.module, named.optimizer, named.owners, ckpt_dir / tag)
        # DeepSpeed restored the scheduler, but the groups' current lr is only written by the
        # scheduler's next step(), after the next update: set it now, as the saving run had it.
        scheduler = engine.lr_scheduler
        for group, lr in zip(named.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
    return state


@dataclass
class NamedState:
    """What the topology-free save/load needs: ZeRO 0, or the legos under ZeRO 1/2 + EP."""

    optimizer: torch.optim.Optimizer
    """ZeRO 0: the one optimizer. legos_only: the legos' own optimizer."""
    owners: dict[str, str]
    writes_legos: bool
    """True on the ranks of EP group 0 (together they hold every lego once)."""
    legos_only: bool = False
    """ZeRO 1/2 with expert parallelism: only the legos' state is ours to save and load."""
    follow_schedule: Callable[[Any], None] | None = None
    """legos_only: aligns the legos' schedule with DeepSpeed's restored one."""
