"""One SIMT iteration on one rank: every local task forward + backward, one reduction, one step.

Collective symmetry (DESIGN.md §5.4): every rank performs exactly one gradient reduction and one
optimizer step per iteration, and one all-reduce of the per-task loss sums, whatever tasks (or
none) the plan gave it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.engine.deepspeed import accumulate
from gppf_dist.simt.objective import TaskWeights, local_objective
from gppf_dist.simt.plan import Work
from gppf_dist.tasks.base import Batch, TaskType, move_to


@dataclass
class TaskRuntime:
    """What the step needs to know about one task on this rank."""

    index: int
    task_type: TaskType
    weights: TaskWeights
    loader: Iterator[Batch] | None = None


@dataclass
class StepResult:
    task_loss_sums: torch.Tensor
    """Global per-task sums of per-sample losses (all-reduced), float64, in task-index order."""
    regularizer: float
    busy_s: float
    data_s: float
    local_samples: dict[str, int] = field(default_factory=dict)


def _zero_loss(module: torch.nn.Module) -> torch.Tensor:
    """A zero connected to every trainable parameter."""
    return sum(p.sum() * 0.0 for p in module.parameters() if p.requires_grad)  # type: ignore[return-value]


def run_iteration(
    engine: Any,
    works: tuple[Work, ...],
    tasks: dict[str, TaskRuntime],
    world_size: int,
    device: torch.device,
) -> StepResult:
    module = engine.module
    loss_sums = torch.zeros(len(tasks), dtype=torch.float64, device=device)
    data_s = 0.0
    start = time.perf_counter()
    local_samples: dict[str, int] = {}
    num_backwards = max(1, len(works))
    with accumulate(engine, num_backwards) as contexts:
        # The router regularizer depends on parameters only: every rank adds it once, and the
        # gradient average over ranks returns it unchanged.
        reg = module.regularizer()
        # Every parameter joins the graph on every rank, so each rank reduces the same gradient
        # set (ZeRO 1/2 reduce only parameters that have a gradient; a mismatch hangs or aborts).
        always = reg + _zero_loss(module)
        if not works:
            with contexts[0]:
                engine.backward(always)
        for i, work in enumerate(works):
            task = tasks[work.task]
            assert task.loader is not None, f"no loader for planned task {work.task}"
            t0 = time.perf_counter()
            batch = next(task.loader)
            data_s += time.perf_counter() - t0
            images = batch.images.to(device, non_blocking=True)
            targets = move_to(batch.targets, device)
            groups = batch.groups.to(device)
            with contexts[i]:
                outputs = engine(work.task, images)
                per_sample = task.task_type.loss(outputs, targets, groups)
                assert per_sample.shape == (images.shape[0],), (
                    f"{work.task}: loss must be per-sample, got shape {tuple(per_sample.shape)}"
                )
                loss = local_objective(per_sample, task.weights, world_size)
                if i == 0:
                    loss = loss + always
                engine.backward(loss)
            loss_sums[task.index] += per_sample.detach().double().sum()
            local_samples[work.task] = images.shape[0]
    engine.step()
    busy_s = time.perf_counter() - start - data_s
    dist.all_reduce(loss_sums, op=dist.ReduceOp.SUM)
    return StepResult(loss_sums.cpu(), float(reg.detach()), busy_s, data_s, local_samples)
