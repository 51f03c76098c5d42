"""Topology-free model and optimizer state: saved by parameter name and global lego id.

DeepSpeed's own files key optimizer state by parameter *index* and save the module from rank 0
only, which breaks as soon as ranks hold different legos (expert parallelism) or the EP size
changes between save and resume. With ZeRO 0 every checkpoint therefore also holds
`<tag>/gppf/shared.pt` (all non-lego parameters, buffers and their optimizer state, by name,
from rank 0) and one file per lego `<tag>/gppf/lego_<layer>_<id>.pt` (written by the lego's
owner in EP group 0). Loading reads what this rank holds under the *current* layout.

Under ZeRO 1/2 with expert parallelism, DeepSpeed's files hold the shared parameters' optimizer
state (partitioned by ZeRO) and the lego files hold the legos' (their own optimizer,
`engine/lego_optim.py`): `shared.pt` then has parameters and buffers only (`"optim": None`), for
tools such as gppf-extract, and training resumes load just the legos from here (`legos_only`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gppf_dist.checkpoint.layout import NAMED_DIR, SHARED_FILE, lego_file
from gppf_dist.checkpoint.marker import read_marker
from gppf_dist.checkpoint.saving import write_torch
from gppf_dist.model.owners import OwnerMap

DIR = NAMED_DIR


def _lego_file(key: tuple[int, int] | None) -> str:
    assert key is not None
    return lego_file(*key)


def _opt_state(optimizer: torch.optim.Optimizer, p: nn.Parameter) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else v
            for k, v in optimizer.state.get(p, {}).items()}  # fmt: skip


def _holds(group: dict[str, Any], param: torch.Tensor) -> bool:
    return any(p is param for p in group["params"])


def _placed(key: str, value: Any, param: torch.Tensor, group: dict[str, Any]) -> Any:
    """Where torch's own `Optimizer.load_state_dict` puts a state value: tensors on the
    parameter's device, except a `step` counter, which stays on the host unless the group is
    fused or capturable (their kernels read it on the device: a host `step` fails the first
    optimizer step after a resume on CUDA)."""
    if not torch.is_tensor(value):
        return value
    if key == "step" and not (group.get("fused") or group.get("capturable")):
        return value
    return value.to(param.device)


def save_named_state(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    owners: OwnerMap,
    tag_dir: Path,
    *,
    write_shared: bool,
    write_legos: bool,
    legos_only: bool = False,
) -> None:
    out = tag_dir / DIR
    out.mkdir(parents=True, exist_ok=True)
    params = dict(module.named_parameters())
    if write_shared:
        shared = {n: p for n, p in params.items() if not owners.is_lego(n)}
        state = {
            "params": {n: p.detach().cpu() for n, p in shared.items()},
            "buffers": {n: b.detach().cpu() for n, b in module.named_buffers()},
            "optim": None
            if legos_only
            else {n: _opt_state(optimizer, p) for n, p in shared.items()},
        }
        write_torch(state, out / SHARED_FILE)
    if write_legos:
        files: dict[str, dict[str, Any]] = {}
        for n, p in params.items():
            if owners.is_lego(n):
                entry = files.setdefault(_lego_file(owners.lego(n)), {"params": {}, "optim": {}})
                entry["params"][n] = p.detach().cpu()
                entry["optim"][n] = _opt_state(optimizer, p)
        for name, entry in files.items():
            write_torch(entry, out / name)


def has_named_state(tag_dir: Path) -> bool:
    return (tag_dir / DIR / SHARED_FILE).is_file()


@torch.no_grad()
def load_named_state(
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    owners: OwnerMap,
    tag_dir: Path,
    legos_only: bool = False,
) -> None:
    """Load every parameter (and, given an optimizer, its state) this rank holds, or with
    `legos_only` just its legos; fail naming what is missing."""
    src = tag_dir / DIR
    params = dict(module.named_parameters())
    if legos_only:
        params = {n: p for n, p in params.items() if owners.is_lego(n)}
        entries = []
    else:
        entries = [torch.load(src / SHARED_FILE, weights_only=False)]
        if optimizer is not None and entries[0]["optim"] is None:
            raise ValueError(
                f"checkpoint {str(tag_dir)!r} was saved under ZeRO 1/2: the optimizer state of its "
                "shared parameters is in DeepSpeed's partitioned files; resume it with the "
                "`parallel.zero_stage` it was saved with"
            )
    wanted = {_lego_file(owners.lego(n)) for n in params if owners.is_lego(n)}
    for name in sorted(wanted):
        if not (src / name).is_file():
            raise ValueError(f"checkpoint {str(tag_dir)!r} lacks {name}: it cannot be resumed")
        entries.append(torch.load(src / name, weights_only=False))
    loaded = set()
    for entry in entries:
        for n, value in entry["params"].items():
            if n in params:
                params[n].copy_(value.to(params[n].device))
                loaded.add(n)
                if optimizer is None:
                    continue
                state = (entry["optim"] or {}).get(n) or {}
                group = next((g for g in optimizer.param_groups if _holds(g, params[n])), {})
                optimizer.state[params[n]] = {
                    k: _placed(k, v, params[n], group) for k, v in state.items()
                }
        for n, value in entry.get("buffers", {}).items():
            buffer = module.get_buffer(n) if n in dict(module.named_buffers()) else None
            if buffer is not None:
                buffer.copy_(value.to(buffer.device))
    for sub in module.modules():  # state derived from buffers (the router's frozen routes)
        after_load = getattr(sub, "after_load", None)
        if callable(after_load):
            after_load()
    missing = set(params) - loaded
    if missing:
        raise ValueError(f"checkpoint {str(tag_dir)!r} has no values for {sorted(missing)[:5]}")
    if optimizer is not None:
        for p, state in list(optimizer.state.items()):
            if not state:
                del optimizer.state[p]


def read_buffers(tag_dir: Path) -> dict[str, torch.Tensor] | None:
    """The model buffers a checkpoint saved by name (e.g. the router's frozen routes), or None
    when it has no topology-free files."""
    path = tag_dir / DIR / SHARED_FILE
    if not path.is_file():
        return None
    return torch.load(path, weights_only=False)["buffers"]


@dataclass(frozen=True)
class SavedRoutes:
    """What a checkpoint recorded of the routing, for placing legos at the next start."""

    frozen_index: torch.Tensor
    """[tasks, layers, k] lego ids each task routes to, frozen (the router's `frozen_index`,
    tasks in the model's order)."""
    per_sample_s: dict[str, float]
    """Measured seconds per sample of each task (the marker's cost table; empty if none)."""


def saved_routes(tag_dir: Path) -> SavedRoutes | None:
    """The routes frozen at the checkpoint in `tag_dir` and its measured costs, or None when
    routes were not frozen yet (or the checkpoint has no topology-free files)."""
    buffers = read_buffers(tag_dir)
    if buffers is None or not bool(buffers.get("router.is_frozen", False)):
        return None
    marker = read_marker(tag_dir)
    per_sample = ((marker.costs if marker else None) or {}).get("per_sample_s") or {}
    return SavedRoutes(buffers["router.frozen_index"], dict(per_sample))
