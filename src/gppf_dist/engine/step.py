"""One SIMT iteration on one rank: every local task forward + backward, one reduction, one step.

Collective symmetry (DESIGN.md §5.4): every rank performs the same gradient reduction, one
optimizer step and one all-reduce of step statistics per iteration, whatever tasks (or none) the
plan gave it. How gradients are reduced and the optimizer stepped is the context's `reduction`
(`reduction.py`: SIMT's own, SIMT with expert parallelism, or DeepSpeed's ZeRO 1/2), chosen once
when the step is assembled (`assemble.py`).

Device discipline (DESIGN.md §6): every tensor the step computes stays on the compute device,
statistics included; between the first forward and the optimizer step nothing waits for the
device (`bench/host_sync.py` finds such calls; `tests/unit/test_step_device.py` counts them).
The step's one host sync is documented where it is made: reading the all-reduced statistics,
the regularizer and the gradient norm back, in one copy, after the optimizer step. Compute times
come from `DeviceTimer` (CUDA events on GPUs), read after that sync, so a step's times ride in
the next step's statistics. The training precision is applied inside the model's forward
(`precision.py`), because DeepSpeed's forward switches an outer autocast off; the step's own
autocast covers the losses, which run outside the engine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

from gppf_dist.data.load.prefetch import batch_to_device
from gppf_dist.engine.deepspeed import Engine
from gppf_dist.engine.reduction import Reduction
from gppf_dist.engine.replay import ReplayShare, float_leaves, surrogate
from gppf_dist.engine.timing import DeviceTimer
from gppf_dist.health import watchdog
from gppf_dist.parallel.expert import EPSession, PeerWork
from gppf_dist.simt.objective import TaskWeights, local_objective
from gppf_dist.simt.plan import Plan, Work
from gppf_dist.tasks.base import Batch, TaskType


@dataclass
class TaskRuntime:
    """What the step needs to know about one task on this rank."""

    index: int
    task_type: TaskType
    weights: TaskWeights
    max_local_batch: int = 0
    """Samples per forward pass at most (0: the whole share in one); the loader yields the
    share as that many micro-batches."""
    group: int = 1
    """Its loss couples the samples of groups this large (1: none); a cap that cuts groups makes
    the share run in embed and replay passes (`replay.py`)."""


@dataclass
class StepResult:
    """Step statistics, all-reduced: identical on every rank."""

    task_loss_sums: torch.Tensor
    """Per-task sums of per-sample losses over the global batch, in task-index order."""
    skipped: torch.Tensor
    """Per-task counts of bad samples skipped so far by this run's loaders."""
    dropped: torch.Tensor
    """Per-task counts of targets (boxes, keypoints) the geometry dropped from kept samples so
    far (no sample lost)."""
    task_seconds: torch.Tensor
    """Per-task compute time (forward + backward) summed over the ranks that ran it, of the
    *previous* step (device timings are read after a step's end-of-step sync; zeros at the
    first step of a process)."""
    rank_busy_s: torch.Tensor
    """Per-rank compute time (excluding data waits) of the previous step, as `task_seconds`."""
    stop: bool
    """Some rank was asked to stop (preemption): every rank checkpoints and exits now."""
    regularizer: float
    grad_norm: float
    data_s: float
    lego_calls: tuple[float, float] = (0.0, 0.0)
    """(served by the requesting rank, served by another rank) this step, over all ranks."""


@dataclass
class StepContext:
    """Fixed for the run: the engine, the tasks and how to reduce (made by `assemble.py`)."""

    engine: Engine
    tasks: dict[str, TaskRuntime]
    world_size: int
    rank: int
    device: torch.device
    reduction: Reduction
    loaders: dict[str, Iterator[Batch]]
    """task -> this rank's batches of it (`data/load/task_loaders.py`), for the tasks it runs."""
    stop_requested: Callable[[], bool] = lambda: False
    """This rank's preemption flag; the step's all-reduce turns it into a global decision."""
    ep: EPSession | None = None
    """Expert parallelism (ep_size > 1): the lego dispatch session of this rank."""
    ep_ranks: tuple[int, ...] = ()
    """The ranks of this rank's EP group, in EP-rank order."""
    precision: str = "fp32"
    """"bf16": forward and loss under autocast (parameters, gradients, optimizer stay fp32)."""
    channels_last: bool = False
    """Images in NHWC memory format (the model's weights are converted by `precision.py`)."""
    timer: DeviceTimer | None = None
    """Compute timings across steps (created at the first step)."""


def _compute(ctx: StepContext) -> contextlib.AbstractContextManager:
    """Mixed precision for what runs outside the engine's forward (losses, idle EP exchanges);
    the forward gets its autocast inside the model (`precision.py`). Backward runs outside it,
    and parameters, gradients and the optimizer stay fp32, so every reduction path (SIMT's,
    DeepSpeed's, the legos') is unchanged."""
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.precision == "bf16")


@dataclass(frozen=True)
class Forward:
    """One forward pass of this rank's step (`replay.py` for the phases)."""

    work: Work
    """The samples it forwards (a micro-batch of a planned work)."""
    phase: str = "train"
    """"train": forward, loss, backward; for a coupled task cut below its group size, "embed"
    (forward, outputs kept) for every micro-batch, then "replay" (forward, backward from the
    whole share's loss gradient) for every micro-batch."""
    last: bool = True
    """The last micro-batch of its work in this phase."""


def _forwards(ctx: StepContext, plan: Plan, present: set[str], rank: int) -> list[Forward]:
    """`rank`'s forward passes this step, in order: one per work of a present task, or one per
    micro-batch when the task caps its samples per forward (`max_local_batch`); twice per
    micro-batch (`replay.py`) when the cap cuts the groups of a task whose loss couples them."""
    out = []
    for w in plan.rank_work(rank):
        if w.task not in present:
            continue
        task = ctx.tasks[w.task]
        cap = task.max_local_batch or w.local_batch
        parts = [
            replace(w, local_batch=min(cap, w.local_batch - lo))
            for lo in range(0, w.local_batch, cap)
        ]
        phases = ["embed", "replay"] if len(parts) > 1 and cap % task.group else ["train"]
        for phase in phases:
            out += [Forward(p, phase, i == len(parts) - 1) for i, p in enumerate(parts)]
    return out


def _micro_steps(
    ctx: StepContext, plan: Plan, present: set[str]
) -> tuple[list[Forward | None], list[list[Forward]]]:
    """This rank's forward passes in order and, under EP, every EP-group peer's (the list of
    this rank's is padded with None, idle micro-steps, to the longest, so the group's lego
    exchanges stay in lockstep)."""
    mine: list[Forward | None] = list(_forwards(ctx, plan, present, ctx.rank))
    if ctx.ep is None:
        return mine, []
    peers = [_forwards(ctx, plan, present, r) for r in ctx.ep_ranks]
    return mine + [None] * (max(map(len, peers)) - len(mine)), peers


def _begin_ep(ctx: StepContext, peers: list[list[Forward]], j: int) -> None:
    assert ctx.ep is not None
    ctx.ep.begin(
        [
            PeerWork(f[j].work.task, f[j].work.local_batch) if j < len(f) else PeerWork(None)
            for f in peers
        ]
    )


class _Backwards:
    """The step's backward calls: each in its reduction context, the first adding `extra`."""

    def __init__(self, engine: Engine, contexts: list, extra: torch.Tensor) -> None:
        self.engine, self.contexts, self.extra, self.done = engine, contexts, extra, 0

    def context(self) -> contextlib.AbstractContextManager:
        return self.contexts[self.done]

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss + self.extra if self.done == 0 else loss)
        self.done += 1


def _task_loss(
    ctx: StepContext, task: TaskRuntime, name: str, outputs: Any, targets: Any, groups: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample losses, this rank's part of the objective)."""
    per_sample = task.task_type.loss(outputs, targets, groups).float()
    assert per_sample.shape == (groups.shape[0],), (
        f"{name}: loss must be per-sample, got shape {tuple(per_sample.shape)}"
    )
    return per_sample, local_objective(per_sample, task.weights, ctx.world_size)


def run_iteration(ctx: StepContext, plan: Plan, present: set[str]) -> StepResult:
    engine = ctx.engine
    module = engine.module
    num_tasks = len(ctx.tasks)
    if ctx.timer is None:
        ctx.timer = DeviceTimer(ctx.device)
    timer = ctx.timer
    loss_sums = torch.zeros(num_tasks, dtype=torch.float64, device=ctx.device)
    data_s = 0.0
    calls0 = (ctx.ep.local_calls, ctx.ep.remote_calls) if ctx.ep is not None else (0, 0)
    micro, peers = _micro_steps(ctx, plan, present)
    # Without EP an embed pass runs no backward; under EP it does (its exchanges' backward).
    n_backward = sum(f is None or f.phase != "embed" or ctx.ep is not None for f in micro)
    share = ReplayShare()
    with ctx.reduction.backward_contexts(engine, max(1, n_backward)) as contexts:
        # The router regularizer depends on parameters only: every rank adds it once, and the
        # gradient average over ranks returns it unchanged.
        reg = module.regularizer()
        steps = _Backwards(engine, contexts, ctx.reduction.extra_loss(module, reg))
        if not micro:
            with steps.context():
                steps.backward(reg.new_zeros(()))
        for i, f in enumerate(micro):
            watchdog.phase("forward", f.work.task if f is not None else "peers' legos")
            if ctx.ep is not None:
                _begin_ep(ctx, peers, i)
            if f is None:  # idle EP micro-step: serve the peers' lego calls only
                t_start = timer.mark()
                with steps.context():
                    with _compute(ctx):
                        token = ctx.ep.finish(reg.new_zeros(()).requires_grad_())  # type: ignore[union-attr]
                    steps.backward(token)
                timer.add(num_tasks, t_start, timer.mark())
                continue
            name = f.work.task
            task = ctx.tasks[name]
            if f.phase == "replay":
                batch, grads = share.batches[share.replayed], share.grads[share.replayed]
                share.replayed += 1
            else:
                loader = ctx.loaders.get(name)
                assert loader is not None, f"no loader for planned task {name}"
                t0 = time.perf_counter()
                batch = batch_to_device(next(loader), ctx.device, ctx.channels_last)
                data_s += time.perf_counter() - t0
            t_start = timer.mark()
            if f.phase == "train":
                with steps.context():
                    with _compute(ctx):
                        outputs = engine.forward(name, batch.images)
                        per_sample, loss = _task_loss(
                            ctx, task, name, outputs, batch.targets, batch.groups
                        )
                        if ctx.ep is not None:  # layers the task's head skipped still exchange
                            loss = loss + ctx.ep.finish(per_sample.sum() * 0.0)
                    steps.backward(loss)
                loss_sums[task.index] += per_sample.detach().double().sum()
            elif f.phase == "embed":
                if ctx.ep is None:
                    with torch.no_grad(), _compute(ctx):
                        outputs = engine.forward(name, batch.images)
                else:  # the exchanges' backward is a collective: run it, with zero gradients
                    with steps.context():
                        with _compute(ctx):
                            outputs = engine.forward(name, batch.images)
                            zero = sum(t.float().sum() for t in float_leaves(outputs)) * 0.0
                            token = ctx.ep.finish(zero)
                        steps.backward(token)
                share.keep(batch, outputs)
                if f.last:
                    with _compute(ctx):
                        per_sample = share.loss_pass(partial(_task_loss, ctx, task, name))
                    loss_sums[task.index] += per_sample.double().sum()
            else:
                with steps.context():
                    with _compute(ctx):
                        outputs = engine.forward(name, batch.images)
                        loss = surrogate(outputs, grads)
                        if ctx.ep is not None:
                            loss = loss + ctx.ep.finish(loss * 0.0)
                    steps.backward(loss)
                if f.last:
                    share = ReplayShare()
            t_end = timer.mark()
            timer.add(task.index, t_start, t_end)
            timer.add(num_tasks, t_start, t_end)
    calls = (0, 0)
    if ctx.ep is not None:
        calls = (ctx.ep.local_calls - calls0[0], ctx.ep.remote_calls - calls0[1])
    stats = _local_stats(ctx, loss_sums, calls)
    watchdog.phase("gradient all-reduce")  # and the optimizer step, and the host sync after it
    totals, grad_norm = ctx.reduction.reduce_and_step(engine, present, stats)
    # The step's one host sync (documented in the module docstring): statistics, regularizer
    # and gradient norm come back in one copy, after the optimizer step.
    host = torch.cat(
        [totals.double(), reg.detach().double().reshape(1), grad_norm.double().reshape(1)]
    ).tolist()
    timer.collect_step(num_tasks + 1)  # the device has finished: the step's events are readable
    return _unpack(ctx, host[:-2], host[-2], host[-1], data_s)


def _local_stats(ctx: StepContext, loss_sums: torch.Tensor, calls: tuple[int, int]) -> torch.Tensor:
    """This rank's share of the step statistics; summed over ranks they are the global ones.

    On the compute device (they ride in the first gradient bucket): the loss sums are there
    already; the host-side numbers travel in one non-blocking copy."""
    assert ctx.timer is not None
    n, w = len(ctx.tasks), ctx.world_size
    skipped, dropped = [0.0] * n, [0.0] * n
    for name, loader in ctx.loaders.items():
        skipped[ctx.tasks[name].index] = float(sum(getattr(loader, "skipped", {}).values()))
        dropped[ctx.tasks[name].index] = float(sum(getattr(loader, "dropped", {}).values()))
    timed = ctx.timer.last or [0.0] * (n + 1)
    busy = [0.0] * w
    busy[ctx.rank] = timed[n]
    flags = [float(calls[0]), float(calls[1]), 1.0 if ctx.stop_requested() else 0.0]
    host = torch.tensor(skipped + dropped + timed[:n] + busy + flags, dtype=torch.float64)
    if ctx.device.type == "cuda":
        host = host.pin_memory()
    return torch.cat([loss_sums, host.to(ctx.device, non_blocking=True)])


def _unpack(
    ctx: StepContext, totals: list[float], reg: float, grad_norm: float, data_s: float
) -> StepResult:
    n, w = len(ctx.tasks), ctx.world_size

    def part(start: int, stop: int) -> torch.Tensor:
        return torch.tensor(totals[start:stop], dtype=torch.float64)

    return StepResult(
        task_loss_sums=part(0, n),
        skipped=part(n, 2 * n),
        dropped=part(2 * n, 3 * n),
        task_seconds=part(3 * n, 4 * n),
        rank_busy_s=part(4 * n, 4 * n + w),
        stop=totals[-1] > 0,
        lego_calls=(totals[-3], totals[-2]),
        regularizer=reg,
        grad_norm=grad_norm,
        data_s=data_s,
    )
