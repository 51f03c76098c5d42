"""SIMT task-to-rank planners: pure functions, identical on every rank, no communication.

A task's global batch B_t is split evenly over its S_t canonical data streams (world-size
independent), so a plan only decides which rank reads which streams; the losses do not depend on
it, only the speed does. A rank with several tasks runs them in turn and accumulates gradients
before the single optimizer step.

* `plan_static` (the classic proportional scheme): whole tasks packed onto ranks by batch size
  (LPT) when world_size <= tasks; otherwise rank groups sized in proportion to B_t.
* `plan_cost_aware`: stream-level LPT on *measured* per-sample costs plus a per-(rank, task)
  overhead, minimising the slowest rank's predicted time; an expensive task is spread over
  several ranks while cheap ones share a rank.

Example, 8 equal tasks on 3 ranks: rank0 = [t0, t3, t6], rank1 = [t1, t4, t7], rank2 = [t2, t5].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TaskDemand:
    name: str
    batch_size: int
    """Global per-iteration batch B_t."""
    num_streams: int
    weight: float = 1.0
    cost_per_sample: float = 1.0
    """Predicted time per sample (forward + backward); the cost table refines it as it trains."""
    every: int = 1
    """The task runs on steps where step % every == 0 (1 = every step, the SIMT default)."""

    @property
    def per_stream_batch(self) -> int:
        return self.batch_size // self.num_streams

    @property
    def cost(self) -> float:
        return self.cost_per_sample * self.batch_size


@dataclass(frozen=True)
class Work:
    """One task's share on one rank for one iteration."""

    task: str
    stream_ids: tuple[int, ...]
    local_batch: int


@dataclass(frozen=True)
class Plan:
    world_size: int
    per_rank: tuple[tuple[Work, ...], ...]

    def to_state(self) -> dict[str, Any]:
        """JSON-friendly form, kept in checkpoints (the plan in force when they were saved)."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, world_size: int) -> Plan | None:
        """The saved plan, if it was made for this world size (else the caller re-plans)."""
        if not state or state["world_size"] != world_size:
            return None
        per_rank = tuple(
            tuple(Work(w["task"], tuple(w["stream_ids"]), w["local_batch"]) for w in works)
            for works in state["per_rank"]
        )
        return cls(world_size, per_rank)

    def rank_work(self, rank: int) -> tuple[Work, ...]:
        return self.per_rank[rank]

    def task_ranks(self, task: str) -> tuple[int, ...]:
        return tuple(
            r for r, works in enumerate(self.per_rank) if any(w.task == task for w in works)
        )

    def predicted_loads(self, demands: list[TaskDemand], overhead: float = 0.0) -> list[float]:
        cost = {d.name: d.cost_per_sample for d in demands}
        return [
            sum(overhead + cost[w.task] * w.local_batch for w in works) for works in self.per_rank
        ]

    def balance_efficiency(self, demands: list[TaskDemand], overhead: float = 0.0) -> float:
        """Predicted mean / max rank load (1.0 = perfectly balanced)."""
        loads = self.predicted_loads(demands, overhead)
        peak = max(loads)
        return sum(loads) / len(loads) / peak if peak > 0 else 1.0

    def describe(self, demands: list[TaskDemand], overhead: float = 0.0) -> str:
        loads = self.predicted_loads(demands, overhead)
        lines = [f"SIMT plan for world size {self.world_size}:"]
        for rank, works in enumerate(self.per_rank):
            items = ", ".join(
                f"{w.task}[streams {','.join(map(str, w.stream_ids))}; batch {w.local_batch}]"
                for w in works
            )
            lines.append(f"  rank {rank}: load {loads[rank]:.1f}  {items or '(idle)'}")
        efficiency = self.balance_efficiency(demands, overhead)
        lines.append(f"  predicted balance efficiency (mean/max): {efficiency:.3f}")
        return "\n".join(lines)


def _check_demands(demands: list[TaskDemand], world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if not demands:
        raise ValueError("SIMT needs at least one task")
    for d in demands:
        if d.every < 1:
            raise ValueError(f"`simt.tasks.{d.name}.every`={d.every} must be >= 1")
        if d.batch_size <= 0 or d.batch_size % d.num_streams:
            raise ValueError(
                f"`simt.tasks.{d.name}.batch_size`={d.batch_size} must be a positive multiple of "
                f"`data.streams_per_task`={d.num_streams}"
            )


def _pack_tasks(demands: list[TaskDemand], world_size: int) -> list[list[TaskDemand]]:
    """LPT by batch size: largest first onto the least-loaded rank; ties by rank then name."""
    bins: list[list[TaskDemand]] = [[] for _ in range(world_size)]
    loads = [0.0] * world_size
    for d in sorted(demands, key=lambda d: (-d.batch_size, d.name)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        bins[rank].append(d)
        loads[rank] += d.batch_size
    return bins


def _group_sizes(demands: list[TaskDemand], world_size: int) -> list[int]:
    """Ranks per task ~ proportional to B_t, >= 1 and <= num_streams, summing to <= world."""
    sizes = [1] * len(demands)
    spare = world_size - len(demands)
    while spare > 0:
        # Give the next rank to the task with the most samples per rank.
        candidates = [i for i, d in enumerate(demands) if sizes[i] < d.num_streams]
        if not candidates:
            break  # more ranks than streams: the rest stay idle (but join every collective)
        best = max(candidates, key=lambda i: (demands[i].batch_size / sizes[i], -i))
        sizes[best] += 1
        spare -= 1
    return sizes


def _finish(per_rank: list[list[Work]]) -> tuple[tuple[Work, ...], ...]:
    return tuple(tuple(sorted(works, key=lambda w: w.task)) for works in per_rank)


def plan_static(demands: list[TaskDemand], world_size: int) -> Plan:
    """Proportional plan that ignores measured costs; pure and deterministic."""
    _check_demands(demands, world_size)
    demands = sorted(demands, key=lambda d: d.name)
    per_rank: list[list[Work]] = [[] for _ in range(world_size)]
    if world_size <= len(demands):
        for rank, tasks in enumerate(_pack_tasks(demands, world_size)):
            for d in tasks:
                streams = tuple(range(d.num_streams))
                per_rank[rank].append(Work(d.name, streams, d.batch_size))
    else:
        next_rank = 0
        for d, size in zip(demands, _group_sizes(demands, world_size), strict=True):
            group = range(next_rank, next_rank + size)
            next_rank += size
            for offset, rank in enumerate(group):
                streams = tuple(range(offset, d.num_streams, size))
                per_rank[rank].append(Work(d.name, streams, len(streams) * d.per_stream_batch))
    return Plan(world_size, _finish(per_rank))


Affinity = dict[str, list[float]]
"""task -> per rank, extra cost per sample of running the task there (e.g. remote lego calls)."""


def _lpt(
    pieces: list[tuple[TaskDemand, tuple[int, ...]]],
    world_size: int,
    overhead: float,
    affinity: Affinity | None = None,
) -> tuple[list[dict[str, list[int]]], tuple[float, int]]:
    """Largest piece first onto the least-loaded rank; overhead once per (rank, task)."""
    loads = [0.0] * world_size
    held: list[dict[str, list[int]]] = [{} for _ in range(world_size)]
    affinity = affinity or {}
    order = sorted(pieces, key=lambda p: (-p[0].cost_per_sample * len(p[1]), p[0].name, p[1]))
    for d, ids in order:
        samples = d.per_stream_batch * len(ids)
        extra_cost = affinity.get(d.name, [0.0] * world_size)

        def after(
            rank: int, d: TaskDemand = d, n: int = samples, extra_cost: list[float] = extra_cost
        ) -> tuple[float, int]:
            work = (d.cost_per_sample + extra_cost[rank]) * n
            extra = 0.0 if d.name in held[rank] else overhead
            return (round(loads[rank] + work + extra, 9), rank)

        rank = min(range(world_size), key=after)
        loads[rank] = after(rank)[0]
        held[rank].setdefault(d.name, []).extend(ids)
    peak = max(loads)
    # Score: the makespan, then how many ranks sit at it (so ties still make progress).
    return held, (peak, sum(1 for load in loads if load >= peak - 1e-9))


def _split(ids: tuple[int, ...], parts: int) -> list[tuple[int, ...]]:
    """Contiguous, near-equal groups of stream ids."""
    size, extra = divmod(len(ids), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(ids[start:stop])
        start = stop
    return out


def plan_cost_aware(
    demands: list[TaskDemand],
    world_size: int,
    overhead: float = 0.0,
    affinity: Affinity | None = None,
) -> Plan:
    """Minimise the slowest rank's predicted time from measured per-sample costs.

    `affinity` adds a per-rank cost per sample (locality: with frozen routes under expert
    parallelism, running a task where its legos live avoids remote lego calls), so the packing
    prefers the ranks that own a task's legos when that does not unbalance the ranks.

    Candidates, all packed by LPT with `overhead` charged once per (rank, task) pair: whole
    tasks; single streams (finest grain); and, for a target makespan M growing from its lower
    bound, every task costing more than M cut into ceil(cost / M) groups of streams. The
    packing with the lowest predicted makespan wins. Pure and deterministic.
    """
    _check_demands(demands, world_size)
    demands = sorted(demands, key=lambda d: d.name)
    whole = [(d, tuple(range(d.num_streams))) for d in demands]
    single = [(d, (i,)) for d in demands for i in range(d.num_streams)]
    best: tuple[tuple[float, int], list[dict[str, list[int]]]] | None = None
    for pieces in (whole, single):
        held, score = _lpt(pieces, world_size, overhead, affinity)
        if best is None or score < best[0]:
            best = (score, held)
    per_stream_cost = [d.cost_per_sample * d.per_stream_batch for d in demands]
    target = max(sum(d.cost for d in demands) / world_size, max(per_stream_cost), 1e-12)
    for _ in range(400):
        pieces = []
        for d in demands:
            parts = min(d.num_streams, max(1, math.ceil(d.cost / target - 1e-9)))
            pieces += [(d, ids) for ids in _split(tuple(range(d.num_streams)), parts)]
        held, score = _lpt(pieces, world_size, overhead, affinity)
        if score < best[0]:
            best = (score, held)
        if score[0] <= target * (1 + 1e-9):
            break
        target *= 1.02
    per_stream = {d.name: d.per_stream_batch for d in demands}
    per_rank = [
        [Work(t, tuple(sorted(ids)), len(ids) * per_stream[t]) for t, ids in h.items()]
        for h in best[1]
    ]
    return Plan(world_size, _finish(per_rank))


def make_plan(
    mode: str,
    demands: list[TaskDemand],
    world_size: int,
    overhead: float = 0.0,
    affinity: Affinity | None = None,
) -> Plan:
    """`simt.planner`: static or cost."""
    if mode == "static":
        return plan_static(demands, world_size)
    if mode == "cost":
        return plan_cost_aware(demands, world_size, overhead, affinity)
    raise ValueError(f"`simt.planner`={mode!r} must be static or cost")


def present_tasks(demands: list[TaskDemand], step: int) -> set[str]:
    """Tasks that run at `step` (0-based iteration index)."""
    return {d.name for d in demands if step % d.every == 0}
