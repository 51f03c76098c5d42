"""SIMT task-to-rank planner: a pure function, identical on every rank, no communication.

Every iteration contains every task. A task's global batch B_t is split evenly over its S_t
canonical data streams (world-size independent), so the planner only decides which rank reads
which streams:

* world_size <= number of tasks: whole tasks are packed onto ranks, largest predicted cost first
  onto the least-loaded rank (LPT); a rank with several tasks runs them in turn and accumulates
  gradients before the single optimizer step.
* world_size > number of tasks: each task gets a group of ranks, sized by its predicted cost
  (at least one rank, at most S_t), and its streams are dealt round-robin within the group.

Example, 8 tasks on 3 ranks with equal costs:  rank0 = [t0, t3, t6], rank1 = [t1, t4, t7],
rank2 = [t2, t5].  On 16 ranks: each task gets 2 ranks, each reading S_t/2 streams.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskDemand:
    name: str
    batch_size: int
    """Global per-iteration batch B_t."""
    num_streams: int
    weight: float = 1.0
    cost_per_sample: float = 1.0
    """Relative time per sample (forward + backward); measured costs refine it later."""

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

    def rank_work(self, rank: int) -> tuple[Work, ...]:
        return self.per_rank[rank]

    def task_ranks(self, task: str) -> tuple[int, ...]:
        return tuple(
            r for r, works in enumerate(self.per_rank) if any(w.task == task for w in works)
        )

    def predicted_loads(self, demands: list[TaskDemand]) -> list[float]:
        cost = {d.name: d.cost_per_sample for d in demands}
        return [sum(cost[w.task] * w.local_batch for w in works) for works in self.per_rank]

    def describe(self, demands: list[TaskDemand]) -> str:
        loads = self.predicted_loads(demands)
        lines = [f"SIMT plan for world size {self.world_size}:"]
        for rank, works in enumerate(self.per_rank):
            items = ", ".join(
                f"{w.task}[streams {','.join(map(str, w.stream_ids))}; batch {w.local_batch}]"
                for w in works
            )
            lines.append(f"  rank {rank}: load {loads[rank]:.1f}  {items or '(idle)'}")
        mean, peak = sum(loads) / len(loads), max(loads)
        lines.append(f"  predicted balance efficiency (mean/max): {mean / peak if peak else 1:.3f}")
        return "\n".join(lines)


def _check_demands(demands: list[TaskDemand], world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if not demands:
        raise ValueError("SIMT needs at least one task")
    for d in demands:
        if d.batch_size <= 0 or d.batch_size % d.num_streams:
            raise ValueError(
                f"`simt.tasks.{d.name}.batch_size`={d.batch_size} must be a positive multiple of "
                f"`data.streams_per_task`={d.num_streams}"
            )


def _pack_tasks(demands: list[TaskDemand], world_size: int) -> list[list[TaskDemand]]:
    """LPT: largest cost first onto the least-loaded rank; ties broken by rank then name."""
    bins: list[list[TaskDemand]] = [[] for _ in range(world_size)]
    loads = [0.0] * world_size
    for d in sorted(demands, key=lambda d: (-d.cost, d.name)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        bins[rank].append(d)
        loads[rank] += d.cost
    return bins


def _group_sizes(demands: list[TaskDemand], world_size: int) -> list[int]:
    """Ranks per task ~ proportional to cost, >= 1 and <= num_streams, summing to <= world."""
    sizes = [1] * len(demands)
    spare = world_size - len(demands)
    while spare > 0:
        # Give the next rank to the task whose per-rank cost is currently highest.
        candidates = [i for i, d in enumerate(demands) if sizes[i] < d.num_streams]
        if not candidates:
            break  # more ranks than streams: the rest stay idle (but join every collective)
        best = max(candidates, key=lambda i: (demands[i].cost / sizes[i], -i))
        sizes[best] += 1
        spare -= 1
    return sizes


def plan_static(demands: list[TaskDemand], world_size: int) -> Plan:
    """The task-to-rank plan for one iteration; pure and deterministic."""
    _check_demands(demands, world_size)
    demands = sorted(demands, key=lambda d: d.name)
    per_rank: list[list[Work]] = [[] for _ in range(world_size)]
    if world_size <= len(demands):
        for rank, tasks in enumerate(_pack_tasks(demands, world_size)):
            for d in sorted(tasks, key=lambda d: d.name):
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
    return Plan(world_size, tuple(tuple(w) for w in per_rank))
