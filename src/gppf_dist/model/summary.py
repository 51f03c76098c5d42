"""Compute accounting: total parameters, and per task its activated parameters and GMACs.

Both per-task numbers are measured on the task's path through a real forward pass (eval mode,
deterministic routing, batch 1), independently of the model's own bookkeeping:
- GMACs: `torch.utils.flop_counter.FlopCounterMode` counts matmul/conv FLOPs; MACs = FLOPs / 2.
  Norms, activations and pooling are not counted (as in the usual ResNet-50 "4.1 GMACs").
- active parameters: parameters that receive a gradient from the task's outputs (backbone parts
  the task runs, its selected legos, its head and its router row); unused legos, unused pyramid
  levels and other tasks' heads get none. Which parameters are reached does not depend on the
  resolution, so this pass runs on a small input (`probe_input`) to keep the summary quick.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gppf_dist.tasks.base import TaskSpec


def tensor_leaves(obj: Any) -> list[torch.Tensor]:
    """Every tensor nested in dicts/lists/tuples of `obj`, in traversal order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensor_leaves(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in tensor_leaves(v)]
    return []


def sample_input(spec: TaskSpec, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random uint8 image batch of the task's input size."""
    gen = torch.Generator().manual_seed(seed)
    h, w = spec.input_size
    return torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=gen)


def probe_input(spec: TaskSpec, side: int = 128, multiple: int = 32) -> torch.Tensor:
    """A cheap input for `active_params`: each side capped at `side`, rounded up to `multiple`."""
    h, w = (min(v, side) for v in spec.input_size)
    h, w = (-(-v // multiple) * multiple for v in (h, w))
    return torch.zeros(1, 3, h, w, dtype=torch.uint8)


def count_gmacs(model: nn.Module, task: str, images: torch.Tensor) -> float:
    """Multiply-accumulates (×1e-9) of one forward pass of `task` on `images`."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(task, images)
    return counter.get_total_flops() / 2e9


def active_params(model: nn.Module, task: str, images: torch.Tensor) -> int:
    """Parameters reached by the gradient of `task`'s outputs on `images`."""
    model.zero_grad(set_to_none=True)
    outputs = model(task, images)
    leaves = [t for t in tensor_leaves(outputs) if t.is_floating_point() and t.requires_grad]
    torch.stack([t.float().sum() for t in leaves]).sum().backward()
    total = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return int(total)


def summarize(model: nn.Module, specs: dict[str, TaskSpec]) -> dict[str, Any]:
    """`{"params_total": int, "tasks": {task: {"input": [h, w], "active_params", "gmacs"}}}`."""
    was_training = model.training
    model.eval()
    tasks: dict[str, dict[str, Any]] = {}
    try:
        for name, spec in specs.items():
            tasks[name] = {
                "input": [int(spec.input_size[0]), int(spec.input_size[1])],
                "active_params": active_params(model, name, probe_input(spec)),
                "gmacs": round(count_gmacs(model, name, sample_input(spec)), 4),
            }
    finally:
        model.train(was_training)
    return {"params_total": int(sum(p.numel() for p in model.parameters())), "tasks": tasks}


def format_table(summary: dict[str, Any]) -> str:
    """A human-readable table of `summarize`'s result."""
    lines = [f"parameters (total): {summary['params_total'] / 1e6:.2f} M", ""]
    lines.append(f"{'task':<12} {'input':>10} {'active params (M)':>18} {'GMACs':>8}")
    for name, row in summary["tasks"].items():
        size = f"{row['input'][0]}x{row['input'][1]}"
        lines.append(
            f"{name:<12} {size:>10} {row['active_params'] / 1e6:>18.2f} {row['gmacs']:>8.3f}"
        )
    return "\n".join(lines)
