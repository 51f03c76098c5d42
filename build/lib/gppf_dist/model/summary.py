"""Compute accounting: total parameters, and per task its activated parameters and GMACs.

Both per-task numbers are measured on the task's path through a forward pass (eval mode,
deterministic routing, batch 1), independently of the model's own bookkeeping:
- GMACs: `torch.utils.flop_counter.FlopCounterMode` counts matmul/conv/attention FLOPs;
  MACs = FLOPs / 2. Norms, activations and pooling are not counted (as in the usual ResNet-50
  "4.1 GMACs"). Attention is counted on every device (`flop_counter`: PyTorch's counter has no
  formula for the CPU attention kernel).
- active parameters: parameters that receive a gradient from the task's outputs (backbone parts
  the task runs, its selected legos, its head and its router row); unused legos, unused pyramid
  levels and other tasks' heads get none.

`summarize` runs these passes on the model's meta-device twin (`meta_count.py`: shapes only,
seconds for GPPF-R50 at 800 px); `exact=True` runs them on the real weights (`count_gmacs` at the
task's input size, `active_params` on a small `probe_input`: which parameters are reached does not
depend on the resolution). Both give the same numbers (tests/unit/test_model_summary_fast.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from gppf_dist.tasks.base import TaskSpec

aten = torch.ops.aten


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


def _cpu_attention_flops(
    query: torch.Size, key: torch.Size, value: torch.Size, *_: Any, **__: Any
) -> int:
    return int(sdpa_flop_count(query, key, value))


def flop_counter() -> FlopCounterMode:
    """PyTorch's FLOP counter, plus the CPU attention kernel (counted elsewhere as matmuls)."""
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def gmacs_of(run: Callable[[], Any]) -> float:
    """Multiply-accumulates (×1e-9) of `run()` under no_grad."""
    with torch.no_grad(), flop_counter() as counter:
        run()
    return counter.get_total_flops() / 2e9


def reached_params(model: nn.Module, outputs: Any) -> int:
    """Parameters of `model` reached by the gradient of the floating-point `outputs`."""
    model.zero_grad(set_to_none=True)
    leaves = [t for t in tensor_leaves(outputs) if t.is_floating_point() and t.requires_grad]
    torch.stack([t.float().sum() for t in leaves]).sum().backward()
    total = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return int(total)


def count_gmacs(model: nn.Module, task: str, images: torch.Tensor) -> float:
    """Multiply-accumulates (×1e-9) of one forward pass of `task` on `images`."""
    return gmacs_of(lambda: model(task, images))


def active_params(model: nn.Module, task: str, images: torch.Tensor) -> int:
    """Parameters reached by the gradient of `task`'s outputs on `images`."""
    return reached_params(model, model(task, images))


def _exact_row(model: nn.Module, name: str, spec: TaskSpec) -> tuple[int, float]:
    return (
        active_params(model, name, probe_input(spec)),
        count_gmacs(model, name, sample_input(spec)),
    )


def graph_params(model: nn.Module, outputs: Any) -> int:
    """Parameters of `model` that the autograd graph of the floating-point `outputs` leads to
    (those a backward pass would give a gradient), found by walking the graph, not running it."""
    nodes = [t.grad_fn for t in tensor_leaves(outputs) if t.grad_fn is not None]
    found = {id(t) for t in tensor_leaves(outputs) if t.grad_fn is None and t.requires_grad}
    seen: set[Any] = set()
    while nodes:
        node = nodes.pop()
        if node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # AccumulateGrad: the gradient's way into a leaf
            found.add(id(node.variable))
        nodes.extend(fn for fn, _ in node.next_functions if fn is not None)
    return int(sum(p.numel() for p in model.parameters() if id(p) in found))


def _meta_rows(model: nn.Module, specs: dict[str, TaskSpec]) -> dict[str, tuple[int, float]]:
    """One forward pass per task on the meta twin: its MACs and the parameters it reaches."""
    from gppf_dist.model.meta_count import meta_images, meta_twin, twin_forward, twin_route

    twin = meta_twin(model)  # type: ignore[arg-type]
    rows = {}
    for name, spec in specs.items():
        route = twin_route(model, twin, name)  # type: ignore[arg-type]
        with flop_counter() as counter:
            outputs = twin_forward(twin, name, meta_images(spec), route)
        rows[name] = (graph_params(twin, outputs), counter.get_total_flops() / 2e9)
    return rows


def summarize(model: nn.Module, specs: dict[str, TaskSpec], exact: bool = False) -> dict[str, Any]:
    """`{"params_total": int, "tasks": {task: {"input": [h, w], "active_params", "gmacs"}}}`.

    Counted on the model's meta-device twin, or with `exact` by running the real weights."""
    was_training = model.training
    model.eval()
    try:
        if exact:
            rows = {name: _exact_row(model, name, spec) for name, spec in specs.items()}
        else:
            rows = _meta_rows(model, specs)
    finally:
        model.train(was_training)
    tasks = {
        name: {
            "input": [int(spec.input_size[0]), int(spec.input_size[1])],
            "active_params": rows[name][0],
            "gmacs": round(rows[name][1], 4),
        }
        for name, spec in specs.items()
    }
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
