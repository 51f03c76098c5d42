"""Saving and restoring a run: the engine's state, the topology-free files, the client state,
and the COMPLETE marker that makes a checkpoint count (DESIGN.md §5.6) and records every file's
size and checksum (§5.8).

A save either completes or fails as one: each rank catches its own write errors, the ranks agree
(`saving.py`), and on failure rank 0 removes the step's directory, so `LATEST` stays on the last
good checkpoint and every rank raises `CheckpointSaveError` with the same one-line message.
The marker learns every rank's files from the directory itself (a shared file system, as resume
already needs): after all writes, rank 0 lists them and writes the marker from the records the
ranks gathered. A rank's records are the checksums of the bytes it wrote, taken as they were
written (`saving.write_torch`): nothing is read back. Only a file no rank recorded (DeepSpeed's
recovery scripts, copied) or recorded differently by two ranks is hashed from disk, in shares
over the ranks (`digest.share_of`).

The engine is reached through `EngineState` (DeepSpeed's adapter lives in `engine/deepspeed.py`,
the one module that imports DeepSpeed). A `Checkpointer` is made once per run with everything
that does not change between saves.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.checkpoint.client_state import ClientState
from gppf_dist.checkpoint.digest import FileRecord, list_files, record_file, share_of
from gppf_dist.checkpoint.layout import COMPLETE, LATEST, NAMED_DIR, checkpoints_dir, tag_for_step
from gppf_dist.checkpoint.manager import mark_complete, prune
from gppf_dist.checkpoint.marker import Marker, Topology
from gppf_dist.checkpoint.named_state import has_named_state, load_named_state, save_named_state
from gppf_dist.checkpoint.resume import select_resume
from gppf_dist.checkpoint.saving import (
    CheckpointSaveError,
    Staging,
    deferring_writes,
    describe_failure,
    first_failure,
    recording_writes,
    write_deferred,
)
from gppf_dist.checkpoint.topology import check_topology
from gppf_dist.checkpoint.zero_state import (
    MASTER,
    STATE_KEYS,
    Partition,
    Sources,
    fill_partition,
    fill_whole,
    fresh_adam_state,
    has_partitions,
    likely_files,
    partition_files,
    save_partitions,
)
from gppf_dist.model.owners import OwnerMap


class EngineState(Protocol):
    """What a checkpoint needs of the training engine."""

    @property
    def module(self) -> nn.Module: ...

    @property
    def lr_scheduler(self) -> Any: ...

    def save_state(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Collective: every rank writes its part of the engine's state under `directory/tag`.
        A failed write raises only once this rank has done its part of the collectives."""

    def load_state(
        self, directory: Path, tag: str, *, module_strict: bool, optimizer: bool
    ) -> dict[str, Any]:
        """Load the engine's state; returns the saved client state."""
        ...

    def zero_partitions(self) -> list[Partition]:
        """Under ZeRO 1/2: this rank's optimizer partitions, by parameter name and offset."""
        ...

    def refresh_from_master(self) -> None:
        """Under ZeRO 1/2: the parameters take the (changed) master weights, on every rank."""


SLOW_SAVE_ENV = "GPPF_FAULT_SLOW_SAVE"
"""Fault injection for tests: "STEP:SECONDS" holds the background save of step STEP that long
before it writes, so a test can kill a run with that save in flight."""


def fault_delay_s(step: int) -> float:
    """The delay `SLOW_SAVE_ENV` asks for the background save of `step` (0 without it)."""
    spec = os.environ.get(SLOW_SAVE_ENV, "")
    if not spec:
        return 0.0
    try:
        at, seconds = spec.split(":")
        return float(seconds) if int(at) == step else 0.0
    except ValueError:
        raise ValueError(f"{SLOW_SAVE_ENV}={spec!r}: expected STEP:SECONDS") from None


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
    group: dist.ProcessGroup | None = None
    """A gloo group over every rank for background saves (`dist/mesh.py`); None: every save
    is synchronous."""
    _inflight: threading.Thread | None = field(default=None, init=False, repr=False)
    _staging: Staging = field(default_factory=Staging, init=False, repr=False)
    _failure: str | None = field(default=None, init=False, repr=False)

    @property
    def directory(self) -> Path:
        return checkpoints_dir(self.run_dir)

    def save(self, state: ClientState, *, background: bool = False) -> None:
        """Collective checkpoint of step `state.step` (i.e. after that many iterations).
        Raises CheckpointSaveError on every rank if any rank failed.

        `background` (with a `group`): the state is copied to host memory here (DeepSpeed's
        collectives included), then written, hashed and published by a thread while training
        goes on; its COMPLETE marker is written only once every rank's files are, so a run
        killed meanwhile resumes from the checkpoint before. A failure is raised by the next
        `save` or `wait`. A save first waits for the one in flight; a synchronous one (the
        last of a run) is still made when that one failed, and the failure raised after it."""
        earlier = self._join()
        if earlier is not None and background:
            raise CheckpointSaveError(earlier)
        tag = tag_for_step(state.step)
        if self.is_main:  # an earlier failed save of this step, or one a resume skipped
            shutil.rmtree(self.directory / tag, ignore_errors=True)
        dist.barrier()
        if background and self.group is not None:
            with deferring_writes(self._staging) as queued:
                failure = first_failure(self._write(tag, state))
            if failure is None:
                # a daemon: a run that fails meanwhile exits without it (no marker is written)
                self._inflight = threading.Thread(
                    target=self._finish,
                    args=(tag, state, queued),
                    name="gppf-checkpoint",
                    daemon=True,
                )
                self._failure = f"checkpoint at step {state.step} failed: its thread ended early"
                self._inflight.start()
                return
            self._staging.release()  # nothing will be written from them
        else:
            with recording_writes() as written:
                failure = first_failure(self._write(tag, state))
            if failure is None:
                failure = first_failure(self._commit(tag, state, self._inside(tag, written)))
        if failure is not None:
            self._discard(tag)
            if earlier is not None:  # the first failure is the one to fix
                raise CheckpointSaveError(f"{earlier} (and the save of step {state.step} too)")
            raise CheckpointSaveError(f"checkpoint at step {state.step} failed{failure}")
        if earlier is not None:
            raise CheckpointSaveError(earlier)

    def wait(self) -> None:
        """Collective: the save in flight, if any, is published (or raises its failure)."""
        failure = self._join()
        if failure is not None:
            raise CheckpointSaveError(failure)

    def _join(self) -> str | None:
        """Wait for the save in flight; its failure, if it failed."""
        if self._inflight is None:
            return None
        self._inflight.join()
        self._staging.release()  # written: its buffers take the next save's copy
        self._inflight, failure, self._failure = None, self._failure, None
        return failure

    def _finish(self, tag: str, state: ClientState, queued: list[Any]) -> None:
        """The background part: write and hash this rank's files, agree, publish. Whatever
        goes wrong ends as `_failure` (set to a failure until this clears it at the end)."""
        try:
            failure = self._publish(tag, state, queued)
            if failure is not None:
                self._discard(tag)
                self._failure = f"checkpoint at step {state.step} failed{failure}"
            else:
                self._failure = None
        except BaseException as err:  # reported by the next save, never lost
            self._failure = (
                f"checkpoint at step {state.step} failed on rank {dist.get_rank()}: "
                f"{describe_failure(err)}"
            )

    def _publish(self, tag: str, state: ClientState, queued: list[Any]) -> str | None:
        group = self.group
        local = None
        with recording_writes() as written:
            try:
                time.sleep(fault_delay_s(state.step))
                write_deferred(queued)
            except Exception as err:  # every rank must reach the agreement, whatever failed
                local = describe_failure(err)
        try:
            failure = first_failure(local, group)
            if failure is None:
                mine = self._inside(tag, written)
                failure = first_failure(self._commit(tag, state, mine, group), group)
        except Exception as err:  # the group itself failed (a peer gone): no marker
            failure = f" on rank {dist.get_rank()}: {describe_failure(err)}"
        return failure

    def _discard(self, tag: str) -> None:
        if self.is_main:
            shutil.rmtree(self.directory / tag, ignore_errors=True)
            (self.directory / (LATEST + ".tmp")).unlink(missing_ok=True)

    def _write(self, tag: str, state: ClientState) -> str | None:
        """This rank's files; what went wrong, if anything."""
        try:
            self.engine.save_state(self.directory, tag, state.to_dict())
            if self.topology.zero_stage > 0:
                parts = self.engine.zero_partitions()
                save_partitions(parts, self.directory / tag, dist.get_rank())
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
        except Exception as err:  # every rank must reach the agreement, whatever failed
            return describe_failure(err)
        return None

    def _inside(self, tag: str, written: dict[str, FileRecord]) -> dict[str, FileRecord]:
        """This rank's records of files under the checkpoint, by path relative to it."""
        root = os.path.abspath(self.directory / tag)
        return {
            Path(os.path.relpath(path, root)).as_posix(): record
            for path, record in written.items()
            if path.startswith(root + os.sep)
        }

    def _commit(
        self,
        tag: str,
        state: ClientState,
        mine: dict[str, FileRecord],
        group: dist.ProcessGroup | None = None,
    ) -> str | None:
        """Collective: every file of the checkpoint gets its record (the writers' own, else
        hashed from disk in shares); rank 0 writes the marker and LATEST and prunes. What went
        wrong on this rank, if anything."""
        tag_dir = self.directory / tag
        listing: list[Any] = [({}, None)]
        if self.is_main:
            try:
                listing[0] = (list_files(tag_dir, frozenset({COMPLETE})), None)
            except OSError as err:
                listing[0] = ({}, describe_failure(err))
        dist.broadcast_object_list(listing, src=0, group=group)
        sizes, failure = listing[0]
        written: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(written, mine, group=group)
        known: dict[str, FileRecord] = {}
        doubtful: set[str] = set()
        for part in written:
            for name, record in part.items():
                if known.setdefault(name, record) != record:
                    doubtful.add(name)  # two ranks wrote it differently: the disk decides
        if failure is None:  # what was written is what is there, or the save fails
            unlisted = sorted(set(known) - set(sizes))
            changed = sorted(n for n in known if n in sizes and n not in doubtful
                             and known[n].size != sizes[n])  # fmt: skip
            if unlisted:
                failure = f"{unlisted[0]}: written but not in the checkpoint's folder listing"
            elif changed:
                name = changed[0]
                failure = f"{name}: {sizes[name]} bytes on disk, {known[name].size} written"
        pending = {n: size for n, size in sizes.items() if n in doubtful or n not in known}
        records: dict[str, FileRecord] = {}
        try:
            for name in share_of(pending, dist.get_rank(), dist.get_world_size()):
                records[name] = record_file(tag_dir / name)
        except OSError as err:
            failure = failure or describe_failure(err)
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (records, failure), group=group)
        if failure is not None or not self.is_main:
            return failure
        if any(part[1] is not None for part in gathered):
            return None  # another rank failed: it reports; rank 0 publishes nothing
        files = {name: known[name] for name in sizes if name not in pending}
        files.update({name: rec for part in gathered for name, rec in part[0].items()})
        try:
            marker = Marker(state.step, self.topology, state.costs, dict(sorted(files.items())))
            mark_complete(self.directory, tag, marker.to_json())
        except OSError as err:
            return describe_failure(err)
        prune(self.directory, self.keep, upto=state.step)
        return None

    def restore(self, resume: str) -> ClientState | None:
        """Collective: load the checkpoint chosen by `resume` (auto/never/tag), verified once
        with the ranks sharing the reading (`resume.select_resume`)."""
        return self.load(select_resume(self.directory, resume))

    def load(self, tag: str | None) -> ClientState | None:
        """Load checkpoint `tag` (chosen and verified by `resume.select_resume`); None: none.

        With named state (ZeRO 0), parameters and optimizer state come from the topology-free
        files, so the EP size may differ from the saving run's. Under ZeRO 1/2 DeepSpeed's
        partitioned files hold the shared parameters' optimizer state and the lego files the
        legos'."""
        if tag is None:
            return None
        tag_dir = self.directory / tag
        check_topology(tag_dir, self.topology)
        engine, named = self.engine, self.named
        if self.topology.zero_stage > 0 and has_partitions(tag_dir):
            return self._load_partitions(tag_dir, tag)
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

    @torch.no_grad()
    def _load_partitions(self, tag_dir: Path, tag: str) -> ClientState:
        """ZeRO 1/2 at any world and EP size (`zero_state.py`): DeepSpeed restores the module
        and the schedule; every rank's saved partitions and the legos' whole-tensor files are
        the sources of this layout's master weights, moments and steps."""
        engine, named = self.engine, self.named
        saved = engine.load_state(self.directory, tag, module_strict=False, optimizer=False)
        files = partition_files(tag_dir)
        likely = likely_files(files, dist.get_rank(), dist.get_world_size())
        try:
            self._fill_partitions(tag_dir, likely)
        except ValueError:
            if len(likely) == len(files):
                raise
            self._fill_partitions(tag_dir, files)  # another EP split: the pieces are elsewhere
        engine.refresh_from_master()
        scheduler = engine.lr_scheduler
        for group, lr in zip(engine.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr  # as the saving run had it (the scheduler writes it after a step)
        if named is not None and named.legos_only:
            assert named.follow_schedule is not None
            named.follow_schedule(scheduler)
        return ClientState.from_dict(saved)

    @torch.no_grad()
    def _fill_partitions(self, tag_dir: Path, files: list[Path]) -> None:
        """This layout's ZeRO partitions, and the expert-parallel legos' own optimizer state,
        from the partition `files` and the lego files."""
        engine, named = self.engine, self.named
        sources = Sources()
        for path in files:
            sources.add_partition_file(path)
        for path, entry in lego_files(tag_dir):
            for name, value in entry["params"].items():
                state = (entry["optim"] or {}).get(name) or {}
                tensors = {MASTER: value, **{k: state[k] for k in STATE_KEYS if k in state}}
                sources.add_whole(name, tensors, float(state.get("step", 0)), path.name)
        for part in engine.zero_partitions():
            fill_partition(part, sources)
        if named is not None and named.legos_only:
            optimizer = named.optimizer
            names = {id(p): n for n, p in engine.module.named_parameters()}
            for group in optimizer.param_groups:
                for param in group["params"]:
                    state = optimizer.state[param]
                    if not state:
                        on_device = bool(group.get("fused") or group.get("capturable"))
                        state.update(fresh_adam_state(param, on_device))
                    fill_whole(names[id(param)], param, state, sources)


def lego_files(tag_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The whole-tensor lego files of an expert-parallel ZeRO 1/2 run (`named_state.py`)."""
    return [(p, torch.load(p, weights_only=False, mmap=True, map_location="cpu"))
            for p in sorted((tag_dir / NAMED_DIR).glob("lego_*.pt"))]  # fmt: skip
