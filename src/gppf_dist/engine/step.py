"""One SIMT iteration on one rank: every local task forward + backward, one reduction, one step.

Collective symmetry (DESIGN.md §5.4): every rank performs the same gradient reduction, one
optimizer step and one all-reduce of step statistics per iteration, whatever tasks (or none) the
plan gave it. With ZeRO 0 the reduction is SIMT's own (`simt/reduce.py`: exact, skips gradients
nobody produced, leaves absent tasks untouched); with ZeRO 1/2 DeepSpeed partitions and reduces
the gradients itself, so every parameter joins every step (configs where a task can be absent
are rejected up front for ZeRO 1/2). Expert-parallel legos under ZeRO 1/2 are reduced and
stepped beside DeepSpeed (`lego_optim.py`), clipped by the same global norm.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gppf_dist.engine.deepspeed import accumulate, global_grad_norm, step_applied
from gppf_dist.engine.lego_optim import LegoOptimizer
from gppf_dist.parallel.expert import EPSession, PeerWork
from gppf_dist.simt.objective import TaskWeights, local_objective
from gppf_dist.simt.plan import Plan, Work
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
    lego_calls: tuple[float, float] = (0.0, 0.0)
    """(served by the requesting rank, served by another rank) this step, over all ranks."""


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
    ep: EPSession | None = None
    """Expert parallelism (ep_size > 1): the lego dispatch session of this rank."""
    ep_ranks: tuple[int, ...] = ()
    """The ranks of this rank's EP group, in EP-rank order."""
    edp_group: dist.ProcessGroup | None = None
    """Lego replicas reduce over this group (the world when ep_size == 1)."""
    ep_group: dist.ProcessGroup | None = None
    legos: LegoOptimizer | None = None
    """Expert parallelism under ZeRO 1/2: the legos' own reduction and optimizer."""
    precision: str = "fp32"
    """"bf16": forward and loss under autocast (parameters, gradients, optimizer stay fp32)."""
    channels_last: bool = False
    """Images in NHWC memory format (activations follow; parameters keep their layout)."""


def _compute(ctx: StepContext) -> contextlib.AbstractContextManager:
    """Mixed precision: the forward and the loss run under bf16 autocast; backward runs outside
    it, and parameters, gradients and the optimizer stay fp32, so every reduction path (SIMT's,
    DeepSpeed's, the legos') is unchanged."""
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.precision == "bf16")


def _backward_contexts(ctx: StepContext, n: int) -> contextlib.AbstractContextManager:
    engine = ctx.engine
    if ctx.own_reduction:
        return contextlib.nullcontext([engine.no_sync() for _ in range(n)])  # type: ignore[attr-defined]
    return accumulate(engine, n)


def _micro_steps(ctx: StepContext, plan: Plan, present: set[str]) -> list[Work | None]:
    """This rank's works in order; under EP padded with None (idle micro-steps) to the longest
    list in its EP group, so the group's lego exchanges stay in lockstep."""
    mine: list[Work | None] = [w for w in plan.rank_work(ctx.rank) if w.task in present]
    if ctx.ep is None:
        return mine
    longest = max(sum(w.task in present for w in plan.rank_work(r)) for r in ctx.ep_ranks)
    return mine + [None] * (longest - len(mine))


def _begin_ep(ctx: StepContext, plan: Plan, present: set[str], j: int) -> None:
    assert ctx.ep is not None
    peers = []
    for r in ctx.ep_ranks:
        works = [w for w in plan.rank_work(r) if w.task in present]
        peers.append(
            PeerWork(works[j].task, works[j].local_batch) if j < len(works) else PeerWork(None)
        )
    ctx.ep.begin(peers)


def run_iteration(ctx: StepContext, plan: Plan, present: set[str]) -> StepResult:
    engine = ctx.engine
    module = engine.module  # type: ignore[attr-defined]
    num_tasks = len(ctx.tasks)
    loss_sums = torch.zeros(num_tasks, dtype=torch.float64, device=ctx.device)
    task_seconds = torch.zeros(num_tasks, dtype=torch.float64)
    data_s = 0.0
    start = time.perf_counter()
    calls0 = (ctx.ep.local_calls, ctx.ep.remote_calls) if ctx.ep is not None else (0, 0)
    micro = _micro_steps(ctx, plan, present)
    with _backward_contexts(ctx, max(1, len(micro))) as contexts:
        # The router regularizer depends on parameters only: every rank adds it once, and the
        # gradient average over ranks returns it unchanged.
        reg = module.regularizer()
        extra = reg if ctx.own_reduction else reg + _zero_loss(module)
        if not micro:
            with contexts[0]:
                engine.backward(extra)  # type: ignore[attr-defined]
        for i, work in enumerate(micro):
            if ctx.ep is not None:
                _begin_ep(ctx, plan, present, i)
            if work is None:  # idle EP micro-step: serve the peers' lego calls only
                with contexts[i]:
                    with _compute(ctx):
                        token = ctx.ep.finish(reg.new_zeros(()).requires_grad_())  # type: ignore[union-attr]
                    engine.backward(token + extra if i == 0 else token)  # type: ignore[attr-defined]
                continue
            task = ctx.tasks[work.task]
            assert task.loader is not None, f"no loader for planned task {work.task}"
            t0 = time.perf_counter()
            batch = next(task.loader)
            t1 = time.perf_counter()
            data_s += t1 - t0
            images = batch.images.to(ctx.device, non_blocking=True)
            if ctx.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = move_to(batch.targets, ctx.device)
            with contexts[i]:
                with _compute(ctx):
                    outputs = engine(work.task, images)  # type: ignore[operator]
                    groups = batch.groups.to(ctx.device)
                    per_sample = task.task_type.loss(outputs, targets, groups).float()
                    assert per_sample.shape == (images.shape[0],), (
                        f"{work.task}: loss must be per-sample, got shape {tuple(per_sample.shape)}"
                    )
                    loss = local_objective(per_sample, task.weights, ctx.world_size)
                    if ctx.ep is not None:  # layers the task's head did not need still exchange
                        loss = loss + ctx.ep.finish(per_sample.sum() * 0.0)
                engine.backward(loss + extra if i == 0 else loss)  # type: ignore[attr-defined]
            loss_sums[task.index] += per_sample.detach().double().sum()
            task_seconds[task.index] += time.perf_counter() - t1
    grad_norm = 0.0
    calls = (0, 0)
    if ctx.ep is not None:
        calls = (ctx.ep.local_calls - calls0[0], ctx.ep.remote_calls - calls0[1])
    busy_s = time.perf_counter() - start - data_s  # compute only: no data wait, no reduction
    stats = _local_stats(ctx, loss_sums, task_seconds, busy_s, calls)
    if ctx.own_reduction:
        legos = {t: ctx.active_legos(t) for t in present}
        produced = produced_parameters(ctx.owners, present, legos)
        named = list(module.named_parameters())
        if ctx.ep is None:  # every parameter is replicated: one reduction, stats riding along
            totals = reduce_gradients(named, produced, ctx.world_size, extra=stats)
            grad_norm = clip_gradients([p for _, p in named], ctx.grad_clip)
        else:
            is_lego = [ctx.owners[n].startswith("lego:") for n, _ in named]
            dense = [np for np, lego in zip(named, is_lego, strict=True) if not lego]
            sharded = [np for np, lego in zip(named, is_lego, strict=True) if lego]
            totals = reduce_gradients(dense, produced, ctx.world_size, extra=stats)
            reduce_gradients(sharded, produced, ctx.world_size, group=ctx.edp_group)
            grad_norm = clip_gradients(
                [p for _, p in dense], ctx.grad_clip, [p for _, p in sharded], ctx.ep_group
            )
    else:
        totals = stats.to(ctx.device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        if ctx.legos is not None:  # before the step: DeepSpeed's clipping norm includes them
            ctx.legos.reduce()
    engine.step()  # type: ignore[attr-defined]
    if not ctx.own_reduction:
        grad_norm = global_grad_norm(engine)
        if ctx.legos is not None:
            ctx.legos.step(grad_norm, ctx.grad_clip, applied=step_applied(engine))
    assert totals is not None
    return _unpack(ctx, totals.double().cpu(), float(reg.detach()), grad_norm, data_s)


def _local_stats(
    ctx: StepContext,
    loss_sums: torch.Tensor,
    task_seconds: torch.Tensor,
    busy_s: float,
    calls: tuple[int, int],
) -> torch.Tensor:
    """This rank's share of the step statistics; summed over ranks they are the global ones."""
    n, w = len(ctx.tasks), ctx.world_size
    skipped = torch.zeros(n, dtype=torch.float64)
    for task in ctx.tasks.values():
        if task.loader is not None:
            skipped[task.index] = float(sum(getattr(task.loader, "skipped", {}).values()))
    busy = torch.zeros(w, dtype=torch.float64)
    busy[ctx.rank] = busy_s
    flags = torch.tensor(
        [float(calls[0]), float(calls[1]), 1.0 if ctx.stop_requested() else 0.0],
        dtype=torch.float64,
    )
    return torch.cat([loss_sums.cpu(), skipped, task_seconds, busy, flags])


def _unpack(
    ctx: StepContext, totals: torch.Tensor, reg: float, grad_norm: float, data_s: float
) -> StepResult:
    n, w = len(ctx.tasks), ctx.world_size
    return StepResult(
        task_loss_sums=totals[:n],
        skipped=totals[n : 2 * n],
        task_seconds=totals[2 * n : 3 * n],
        rank_busy_s=totals[3 * n : 3 * n + w],
        stop=bool(totals[-1] > 0),
        lego_calls=(float(totals[-3]), float(totals[-2])),
        regularizer=reg,
        grad_norm=grad_norm,
        data_s=data_s,
    )
