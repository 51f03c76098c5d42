"""How a failed checkpoint save is told: every rank catches its own write errors, the ranks
agree on the first one, and the run ends with one line naming the step and the cause
("checkpoint at step 40 failed on rank 1: No space left on device (/runs/a/...)").

Tensors are written through our own file object (`write_torch`): `torch.save` to a path turns a
full disk into "basic_ios::clear: iostream error", and into "enforce fail ... unexpected pos"
when a Python write raises; our writer keeps the OSError (ENOSPC, EIO) that names the cause.
"""

from __future__ import annotations

import copy as pycopy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.checkpoint.digest import FileRecord, Hasher


class CheckpointSaveError(RuntimeError):
    """A checkpoint save failed on some rank; the message is the one line to show."""


class _Writer:
    """The file `torch.save` writes into: every write whole or an OSError, and that OSError
    kept (torch replaces an exception from a write by a RuntimeError without the errno)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None
        self.hasher = Hasher()

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as err:
            self.error = err
            raise
        self.hasher.update(view)
        return done

    def flush(self) -> None:
        pass


_recorders: list[dict[str, FileRecord]] = []
_deferred: list[list[tuple[Path, Any, dict[str, Any]]]] = []
_staging: list[Staging | None] = []


class Staging:
    """Host buffers a background save copies into, kept for the next save: copying into
    memory already touched costs a third of copying into fresh memory (page faults), and the
    step boundary waits for the copy. `used` are the buffers of the save in flight; `release`
    hands them back once it is written."""

    def __init__(self) -> None:
        self.free: dict[int, list[torch.UntypedStorage]] = {}
        self.used: list[torch.UntypedStorage] = []

    def copy(self, storage: torch.UntypedStorage) -> torch.UntypedStorage:
        spare = self.free.get(storage.nbytes())
        if spare:
            target = spare.pop()
            target.copy_(storage)
        else:
            target = storage.cpu() if storage.device.type != "cpu" else storage.clone()
        self.used.append(target)
        return target

    def release(self) -> None:
        for storage in self.used:
            self.free.setdefault(storage.nbytes(), []).append(storage)
        self.used = []


def snapshot(obj: Any, staging: Staging | None = None) -> Any:
    """A copy of `obj` (state dicts: dicts, lists, tuples of tensors and plain values) that the
    next step cannot change: every tensor's storage copied to host memory once, views kept as
    views of the copy (so the bytes written are the ones `torch.save` of `obj` writes now)."""
    stage = staging if staging is not None else Staging()
    storages: dict[tuple[int, str], torch.UntypedStorage] = {}
    memo: dict[int, Any] = {}  # one deepcopy memo: shared plain objects stay shared

    def copy(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            key = (storage.data_ptr(), str(storage.device))
            if key not in storages:
                storages[key] = stage.copy(storage)
            out = torch.empty(0, dtype=value.dtype)
            out.set_(storages[key], value.storage_offset(), value.size(), value.stride())
            if isinstance(value, torch.nn.Parameter):
                return torch.nn.Parameter(out, requires_grad=value.requires_grad)
            if value.requires_grad and out.is_floating_point():
                out.requires_grad_(True)
            return out
        if isinstance(value, dict):  # a shallow copy keeps its class and attributes
            out_dict = pycopy.copy(value)  # (state_dict's `_metadata`, defaultdict's factory)
            for k, v in value.items():
                out_dict[k] = copy(v)
            return out_dict
        if isinstance(value, list):
            out_list = pycopy.copy(value)
            out_list[:] = [copy(v) for v in value]
            return out_list
        if isinstance(value, tuple):
            items = [copy(v) for v in value]
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
        return deepcopy(value, memo)

    return copy(obj)


@contextmanager
def deferring_writes(
    staging: Staging | None = None,
) -> Iterator[list[tuple[Path, Any, dict[str, Any]]]]:
    """Inside the block `write_torch` writes nothing: it queues (path, snapshot of the object
    into `staging`, its arguments) for `write_deferred`, so a background save can write what
    the step boundary held while training goes on."""
    queued: list[tuple[Path, Any, dict[str, Any]]] = []
    _deferred.append(queued)
    _staging.append(staging)
    try:
        yield queued
    finally:
        _deferred.remove(queued)
        _staging.pop()


def write_deferred(queued: list[tuple[Path, Any, dict[str, Any]]]) -> None:
    """Write what `deferring_writes` queued, in order (each `write_torch`, recorded)."""
    for path, obj, kwargs in queued:
        write_torch(obj, path, **kwargs)


@contextmanager
def recording_writes() -> Iterator[dict[str, FileRecord]]:
    """{absolute path: what was written} of every `write_torch` inside the block: the save's
    checksums, taken from the bytes as they went out."""
    written: dict[str, FileRecord] = {}
    _recorders.append(written)
    try:
        yield written
    finally:
        _recorders.remove(written)


def write_torch(obj: Any, path: Path, **kwargs: Any) -> FileRecord | None:
    """`torch.save` whose I/O errors are OSErrors naming `path`; returns the file's size and
    SHA-256, hashed as it was written (None: queued by `deferring_writes` instead)."""
    if _deferred:
        _deferred[-1].append((Path(path), snapshot(obj, _staging[-1]), dict(kwargs)))
        return None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    writer = _Writer(fd)
    try:
        try:
            torch.save(obj, writer, **kwargs)
        finally:
            os.close(fd)
    except (OSError, RuntimeError) as err:
        cause = writer.error or (err if isinstance(err, OSError) else None)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from None
    record = writer.hasher.record()
    for written in _recorders:
        written[os.path.abspath(path)] = record
    return record


def describe_failure(err: BaseException) -> str:
    """One line: the OS's words and the file for I/O errors, else the exception."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror} ({err.filename})" if err.filename else err.strerror
    return f"{type(err).__name__}: {err}"


def first_failure(local: str | None, group: dist.ProcessGroup | None = None) -> str | None:
    """Collective: " on rank R: <cause>" for the lowest rank that failed, or None if none did."""
    world_size = dist.get_world_size()
    parts: list[str | None] = [None] * world_size
    dist.all_gather_object(parts, local, group=group)
    for rank, failure in enumerate(parts):
        if failure is not None:
            return f" on rank {rank}: {failure}" if world_size > 1 else f": {failure}"
    return None
