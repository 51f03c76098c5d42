"""Find host syncs: the operations that make the CPU wait for the GPU.

On a GPU, `.item()`, `.tolist()`, `.cpu()`, `float(t)`, `bool(t)`, boolean-mask indexing,
`nonzero` and friends block the Python thread until every queued kernel has run, so the host
stops running ahead of the device and kernel launches stop overlapping compute. The training step
must make none between its first forward and the optimizer step (DESIGN.md §6) except those
documented in `engine/step.py`.

`HostSyncCounter` is a `TorchFunctionMode` that records each such call with the first frame of
ours that made it. It sees the calls on any device, so a CPU-only test catches what would be a
sync on a GPU. The data layer runs on the host by design (decode, collate: its tensors never
touch the device), so calls made from `gppf_dist/data/` are not counted.

On CUDA, `torch.cuda.set_sync_debug_mode` is the ground truth; `gppf-bench gpu-check` reports
both.
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

_PACKAGE = str(Path(__file__).resolve().parents[1])
_HOST_ONLY = str(Path(_PACKAGE) / "data")
_THIS = str(Path(__file__).resolve())

_SYNC_METHODS = {
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",
    "equal",
    "allclose",
    "is_nonzero",
}


def _is_bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _sync_name(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The name of the host sync `func(*args, **kwargs)` would make, or None."""
    name = getattr(func, "__name__", "")
    if name in _SYNC_METHODS:
        return name
    if name in ("__getitem__", "__setitem__") and len(args) > 1 and _is_bool_index(args[1]):
        return f"{name}[bool mask]"
    if name == "where" and len(args) + len(kwargs) == 1:
        return "where(cond)"
    if name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return "repeat_interleave(tensor repeats)"
    if name == "to" and _device_to_host(args, kwargs):
        return "to(cpu)"
    return None


def _device_to_host(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """`tensor.to(...)` from a non-CPU device to the CPU (a CPU tensor's `.to("cpu")` is a
    no-op; use `.cpu()`, which is always counted, for a copy meant to reach the host)."""
    source = args[0] if args else None
    if not isinstance(source, torch.Tensor) or source.device.type == "cpu":
        return False
    targets = (*args[1:], kwargs.get("device"))
    return any(
        (isinstance(a, torch.device) and a.type == "cpu") or (isinstance(a, str) and a == "cpu")
        for a in targets
    )


def _caller() -> str | None:
    """`file:line in function` of the innermost frame of this package (None: not ours, or in
    the host-only data layer)."""
    frame = sys._getframe(2)
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

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        op = _sync_name(func, args, kwargs)
        if op is not None:
            site = _caller()
            if site is not None:
                self.records.append(SyncRecord(op, site, self.phase))
        return func(*args, **kwargs)

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
