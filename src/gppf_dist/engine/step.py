"""One SIMT iteration on one rank: every local task forward + backward, one reduction, one step.

Collective symmetry (DESIGN.md §5.4): every rank performs the same gradient reduction, one
optimizer step and one all-reduce of step statistics per iteration, whatever tasks (or none) the
plan gave it. With ZeRO 0 the reduction is SIMT's own (`simt/reduce.py`: exact, skips gradients
nobody produced, leaves absent tasks untouched); with ZeRO 1/2 DeepSpeed partitions and reduces
the gradients itself, so every parameter joins every step (configs where a task can be absent
are rejected up front for ZeRO 1/2).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gppf_dist.engine.deepspeed import accumulate
from gppf_dist.simt.objective import TaskWeights, local_objective
from gppf_dist.simt.plan import Work
from gppf_dist.simt.reduce import clip_gradients, produced_parameters, reduce_gradients
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
    """Step statistics, all-reduced: identical on every rank."""

    task_loss_sums: torch.Tensor
    """Per-task sums of per-sample losses over the global batch, in task-index order."""
    skipped: torch.Tensor
    """Per-task counts of bad samples skipped so far by this run's loaders."""
    task_seconds: torch.Tensor
    """Per-task compute time (forward + backward) summed over the ranks that ran it."""
    rank_busy_s: torch.Tensor
    """Per-rank compute time of this step (excluding data waits)."""
    stop: bool
    """Some rank was asked to stop (preemption): every rank checkpoints and exits now."""
    regularizer: float
    grad_norm: float
    data_s: float


def _zero_loss(module: torch.nn.Module) -> torch.Tensor:
    """A zero connected to every trainable parameter."""
    return sum(p.sum() * 0.0 for p in module.parameters() if p.requires_grad)  # type: ignore[return-value]


@dataclass
class StepContext:
    """Fixed for the run: the engine and how to reduce."""

    engine: object
    tasks: dict[str, TaskRuntime]
    world_size: int
    rank: int
    device: torch.device
    owners: dict[str, str]
    """GppfModel.param_owners(): which parameters are shared, per task, or legos."""
    active_legos: Callable[[str], set[tuple[int, int]]]
    grad_clip: float
    own_reduction: bool
    """True with ZeRO 0: SIMT reduces and clips; DeepSpeed only steps the optimizer."""
    stop_requested: Callable[[], bool] = lambda: False
    """This rank's preemption flag; the step's all-reduce turns it into a global decision."""


def _backward_contexts(ctx: StepContext, n: int) -> contextlib.AbstractContextManager:
    engine = ctx.engine
    if ctx.own_reduction:
        return contextlib.nullcontext([engine.no_sync() for _ in range(n)])  # type: ignore[attr-defined]
    return accumulate(engine, n)


def run_iteration(ctx: StepContext, works: tuple[Work, ...], present: set[str]) -> StepResult:
    engine = ctx.engine
    module = engine.module  # type: ignore[attr-defined]
    num_tasks = len(ctx.tasks)
    loss_sums = torch.zeros(num_tasks, dtype=torch.float64, device=ctx.device)
    task_seconds = torch.zeros(num_tasks, dtype=torch.float64)
    data_s = 0.0
    start = time.perf_counter()
    works = tuple(w for w in works if w.task in present)
    with _backward_contexts(ctx, max(1, len(works))) as contexts:
        # The router regularizer depends on parameters only: every rank adds it once, and the
        # gradient average over ranks returns it unchanged.
        reg = module.regularizer()
        extra = reg if ctx.own_reduction else reg + _zero_loss(module)
        if not works:
            with contexts[0]:
                engine.backward(extra)  # type: ignore[attr-defined]
        for i, work in enumerate(works):
            task = ctx.tasks[work.task]
            assert task.loader is not None, f"no loader for planned task {work.task}"
            t0 = time.perf_counter()
            batch = next(task.loader)
            t1 = time.perf_counter()
            data_s += t1 - t0
            images = batch.images.to(ctx.device, non_blocking=True)
            targets = move_to(batch.targets, ctx.device)
            with contexts[i]:
                outputs = engine(work.task, images)  # type: ignore[operator]
                per_sample = task.task_type.loss(outputs, targets, batch.groups.to(ctx.device))
                assert per_sample.shape == (images.shape[0],), (
                    f"{work.task}: loss must be per-sample, got shape {tuple(per_sample.shape)}"
                )
                loss = local_objective(per_sample, task.weights, ctx.world_size)
                engine.backward(loss + extra if i == 0 else loss)  # type: ignore[attr-defined]
            loss_sums[task.index] += per_sample.detach().double().sum()
            task_seconds[task.index] += time.perf_counter() - t1
    grad_norm = 0.0
    if ctx.own_reduction:
        legos = {t: ctx.active_legos(t) for t in present}
        produced = produced_parameters(ctx.owners, present, legos)
        named = list(module.named_parameters())
        reduce_gradients(named, produced, ctx.world_size)
        grad_norm = clip_gradients((p for _, p in named), ctx.grad_clip)
    engine.step()  # type: ignore[attr-defined]
    busy_s = time.perf_counter() - start - data_s
    return _gather_stats(
        ctx, loss_sums, task_seconds, busy_s, float(reg.detach()), grad_norm, data_s
    )


def _gather_stats(
    ctx: StepContext,
    loss_sums: torch.Tensor,
    task_seconds: torch.Tensor,
    busy_s: float,
    reg: float,
    grad_norm: float,
    data_s: float,
) -> StepResult:
    """One all-reduce carries loss sums, skip counts, per-task and per-rank times."""
    n, w = len(ctx.tasks), ctx.world_size
    skipped = torch.zeros(n, dtype=torch.float64)
    for task in ctx.tasks.values():
        if task.loader is not None:
            skipped[task.index] = float(sum(getattr(task.loader, "skipped", {}).values()))
    busy = torch.zeros(w, dtype=torch.float64)
    busy[ctx.rank] = busy_s
    stop = torch.tensor([1.0 if ctx.stop_requested() else 0.0], dtype=torch.float64)
    totals = torch.cat([loss_sums.cpu(), skipped, task_seconds, busy, stop]).to(ctx.device)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    totals = totals.cpu()
    return StepResult(
        task_loss_sums=totals[:n],
        skipped=totals[n : 2 * n],
        task_seconds=totals[2 * n : 3 * n],
        rank_busy_s=totals[3 * n : 3 * n + w],
        stop=bool(totals[-1] > 0),
        regularizer=reg,
        grad_norm=grad_norm,
        data_s=data_s,
    )
