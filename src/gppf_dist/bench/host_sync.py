"""Find host syncs: the operations that make the CPU wait for the GPU.

On a GPU, `.item()`, `.tolist()`, `.cpu()`, `float(t)`, `bool(t)`, boolean-mask indexing,
`nonzero`, one-argument `torch.where`, blocking copies between devices and tensors made from
Python data onto a device block the Python thread until the device catches up, so kernel
launches stop overlapping compute. The training step must make none between its first forward
and the optimizer step (DESIGN.md §6) except those documented in `engine/step.py`.

`HostSyncCounter` records each with the first frame of ours that made it. It is a
`TorchFunctionMode` (Python-level calls: `.tolist()` never reaches the dispatcher) paired with a
`TorchDispatchMode` (the aten ops beneath any call and in backward, e.g. the value range
`F.one_hot` reads back); a call recorded at the Python level hides its aten ops, so each sync is
recorded once. Both see calls on any device, so a CPU-only test catches what would be a sync on
a GPU.

Python data makes a sync only when made onto a device: `torch.tensor(data, device=d)` counts for
any `d` (in CPU tests the compute device is the CPU), `torch.tensor(data)` does not (the step
builds small host tensors and uploads them non-blocking, which does not count either). The
dispatcher sees both as `lift_fresh` of a host tensor, so `device=` tells them apart. Calls made
from the host-only data layer (`gppf_dist/data/`: decode, collate) are not counted.

On CUDA, `torch.cuda.set_sync_debug_mode` is the ground truth; `gppf-bench gpu-check` reports both.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_PACKAGE = str(Path(__file__).resolve().parents[1])
_HOST_ONLY = str(Path(_PACKAGE) / "data")
_THIS = str(Path(__file__).resolve())
aten = torch.ops.aten

_SYNC_METHODS = {
    "item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
    "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount",
    "equal", "allclose", "is_nonzero",
}  # fmt: skip
_FROM_DATA = {"tensor", "as_tensor", "asarray", "new_tensor"}
# Aten ops that read values back or have data-dependent output shapes (any overload).
_SYNC_OPS = {
    aten._local_scalar_dense,  # item(), float(t), bool(t), ... inside any function
    aten.nonzero, aten.masked_select, aten.is_nonzero, aten.equal, aten.allclose,
    aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive,
    aten.unique_dim_consecutive, aten.bincount,
}  # fmt: skip
_INDEX_OPS = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}
_MASKS = (torch.bool, torch.uint8)


def _is_mask_index(index: Any) -> bool:
    items = index if isinstance(index, tuple | list) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in _MASKS for i in items)


def _sync_name(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The name of the host sync the Python-level call `func(*args, **kwargs)` makes, or None."""
    name = getattr(func, "__name__", "")
    if name in _SYNC_METHODS:
        return name
    if name in ("__getitem__", "__setitem__") and len(args) > 1 and _is_mask_index(args[1]):
        return f"{name}[bool mask]"
    if name == "where" and len(args) + len(kwargs) == 1:
        return "where(cond)"
    if name == "repeat_interleave" and kwargs.get("output_size") is None:
        from_values = len(args) == 1 or isinstance(args[1], torch.Tensor)  # the output's size
        return "repeat_interleave(tensor repeats)" if from_values else None
    if name in _FROM_DATA:
        device = kwargs.get("device", args[2] if name == "as_tensor" and len(args) > 2 else None)
        if device is None and name == "new_tensor" and args[0].device.type != "cpu":
            device = args[0].device  # made where its tensor is
        return None if device is None else f"{name}(device={torch.device(device)})"
    return None


def _aten_sync_name(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The name of the host sync the aten op `func(*args, **kwargs)` makes, or None."""
    packet = func.overloadpacket
    if packet in _SYNC_OPS:
        return packet.__name__
    if packet in _INDEX_OPS and _is_mask_index(args[1]):
        return f"{packet.__name__}[bool mask]"
    if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
        return "repeat_interleave(tensor repeats)"
    if packet is aten._to_copy:
        source, target, non_blocking = args[0], kwargs.get("device"), kwargs.get("non_blocking")
    elif packet is aten.copy_:
        source, target = args[1], args[0].device
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking")
    else:
        return None
    if target is None or target == source.device or non_blocking:
        return None  # a non-blocking copy between devices waits for nothing
    return f"{packet.__name__}({source.device} -> {target})"


def _caller() -> str | None:
    """`file:line in function` of the innermost frame of this package (None: in the host-only
    data layer), or `outside gppf_dist`."""
    frame = sys._getframe(1)
    site = None
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_HOST_ONLY):
            return None
        if site is None and path.startswith(_PACKAGE) and path != _THIS:
            rel = Path(path).relative_to(_PACKAGE)
            site = f"{rel}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return site or "outside gppf_dist"


@dataclass
class SyncRecord:
    op: str
    """The Python-level call (`item`, `__getitem__[bool mask]`, `tensor(device=cpu)`), or the
    aten op and the call it ran in (`_local_scalar_dense in one_hot`)."""
    site: str
    phase: str
    """`step` (between the step's start and the optimizer step: the hot path), then
    `optimizer step` and `after optimizer step` (see `watch_optimizer_step`), or any label
    the caller sets in `HostSyncCounter.phase`."""


class HostSyncCounter(TorchFunctionMode):
    """`with HostSyncCounter() as c: ...` then `c.records`, `c.count`, `c.by_site()`."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[SyncRecord] = []
        self.phase = "step"
        self._call: str | None = None  # the Python-level call running now
        self._hidden = False  # it was recorded itself: its aten ops are not
        self._dispatch = _AtenLevel(self)

    def __enter__(self) -> HostSyncCounter:
        super().__enter__()
        self._dispatch.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._dispatch.__exit__(*exc)
        super().__exit__(*exc)

    def _record(self, op: str) -> None:
        site = _caller()
        if site is not None:
            self.records.append(SyncRecord(op, site, self.phase))

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        op = _sync_name(func, args, kwargs)
        if op is not None:
            self._record(op)
        outer = self._call, self._hidden
        self._call, self._hidden = getattr(func, "__name__", str(func)), op is not None
        try:
            return func(*args, **kwargs)
        finally:
            self._call, self._hidden = outer

    @property
    def count(self) -> int:
        return len(self.records)

    def hot_path(self) -> list[SyncRecord]:
        """The syncs made before the optimizer step of their step."""
        return [r for r in self.records if r.phase == "step"]

    def by_site(self, records: list[SyncRecord] | None = None) -> Counter[str]:
        return Counter(
            f"{r.op} at {r.site}" for r in (self.records if records is None else records)
        )


class _AtenLevel(TorchDispatchMode):
    """The aten ops beneath the calls `HostSyncCounter` sees (backward included)."""

    def __init__(self, counter: HostSyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        counter = self.counter
        if not counter._hidden:
            op = _aten_sync_name(func, args, kwargs)
            if op is not None:
                counter._record(op if counter._call is None else f"{op} in {counter._call}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def watch_optimizer_step(counter: HostSyncCounter, engine: Any) -> Iterator[None]:
    """Mark where each step's hot path ends: during `engine.step()` the counter's phase is
    `optimizer step`, after it `after optimizer step`; set `counter.phase = "step"` before the
    next step starts."""
    inner = engine.step

    def step(*args: Any, **kwargs: Any) -> Any:
        counter.phase = "optimizer step"
        try:
            return inner(*args, **kwargs)
        finally:
            counter.phase = "after optimizer step"

    own = "step" in vars(engine)
    engine.step = step
    try:
        yield
    finally:
        if own:
            engine.step = inner
        else:
            del engine.step
