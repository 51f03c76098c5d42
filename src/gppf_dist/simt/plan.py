"""SIMT task-to-rank planners: pure functions, identical on every rank, no communication.

A task's global batch B_t is split evenly over its S_t canonical data streams (world-size
independent); a plan decides which rank trains on which samples of it (whole streams, or a
contiguous slice); the losses do not depend on it, only the speed does. A rank with several tasks
runs them in turn and accumulates gradients before the single optimizer step.

* `plan_static` (the classic proportional scheme): whole tasks packed onto ranks by batch size
  (LPT) when world_size <= tasks; otherwise rank groups sized in proportion to B_t.
* `divisible.plan_divisible` (the `cost` planner): any rank may take any contiguous slice of a
  task's batch; fills every rank up to the smallest makespan on measured per-sample costs, with
  a per-(rank, task) overhead, memory caps and lego locality.

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
    granularity: int = 1
    """Plans cut the task's batch only at multiples of this (its loss couples the samples of a
    group: one stream's share, see `tasks/base.py`)."""
    max_local_batch: int = 0
    """At most this many samples per forward pass on a rank (0: no cap); larger shares run as
    several micro-batches."""

    @property
    def per_stream_batch(self) -> int:
        return self.batch_size // self.num_streams

    def time(self, n: int, overhead: float = 0.0, extra_cost: float = 0.0) -> float:
        """Predicted time of `n` samples on one rank: per sample, plus `overhead` per forward
        pass (one, or one per micro-batch under `max_local_batch`); 0 for none."""
        if n <= 0:
            return 0.0
        forwards = math.ceil(n / self.max_local_batch) if self.max_local_batch else 1
        return forwards * overhead + (self.cost_per_sample + extra_cost) * n

    @property
    def cost(self) -> float:
        return self.cost_per_sample * self.batch_size


HINT_UNIT = "cost units: samples x simt.tasks.<task>.cost"
"""The unit of predicted loads made from the config's cost hints (`describe`)."""
MEASURED_UNIT = "seconds: samples x measured seconds per sample"
"""The unit of predicted loads made from a cost table (seconds per sample, `simt/costs.py`)."""

READ_WHOLE_ABOVE = 2 / 3
"""The loaders' rule (`data.stream_reader.READ_WHOLE_ABOVE`; a test keeps them equal): a rank
whose part of a stream's share is at least this fraction reads the share's units whole."""


@dataclass(frozen=True)
class Work:
    """One task's share on one rank for one iteration: `local_batch` samples of the
    concatenated shares of streams `stream_ids`, starting `offset` samples into the first."""

    task: str
    stream_ids: tuple[int, ...]
    local_batch: int
    offset: int = 0


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
            tuple(
                Work(w["task"], tuple(w["stream_ids"]), w["local_batch"], w.get("offset", 0))
                for w in works
            )
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
        by_name = {d.name: d for d in demands}
        return [
            sum(by_name[w.task].time(w.local_batch, overhead) for w in works)
            for works in self.per_rank
        ]

    def idle_ranks(self) -> int:
        return sum(1 for works in self.per_rank if not works)

    def read_amplification(self, demands: list[TaskDemand], indexed: bool = True) -> float:
        """Predicted sample bytes the ranks' loaders read / bytes they decode. A rank prepares
        only the samples of its slice (`data/load/stream_reader.py`); it reads a stream's share
        whole when its part of that share is at least `READ_WHOLE_ABOVE`, else (with `indexed`: the
        manifest has sample offsets) each sample by its byte range."""
        per_stream = {d.name: d.per_stream_batch for d in demands}
        read = used = 0
        for works in self.per_rank:
            for w in works:
                n = per_stream[w.task]
                left, start = w.local_batch, w.offset
                for _ in w.stream_ids:
                    part = min(n - start, left)
                    whole = part >= READ_WHOLE_ABOVE * n or not indexed
                    read, used = read + (n if whole else part), used + part
                    left, start = left - part, 0
        return read / used if used else 1.0

    def balance_efficiency(self, demands: list[TaskDemand], overhead: float = 0.0) -> float:
        """Predicted mean / max rank load (1.0 = perfectly balanced)."""
        loads = self.predicted_loads(demands, overhead)
        peak = max(loads)
        return sum(loads) / len(loads) / peak if peak > 0 else 1.0

    def describe(
        self,
        demands: list[TaskDemand],
        overhead: float = 0.0,
        unit: str = HINT_UNIT,
        whole_streams: bool = False,
        rank_notes: list[str] | None = None,
    ) -> str:
        """Per rank its work and predicted load (in `unit`: what the demands' per-sample costs
        are, config hints or measured seconds), the balance, and why any rank is idle
        (`whole_streams`: the plan hands out whole streams, as the static planner does);
        `rank_notes[r]` ends rank r's line (e.g. its predicted peak memory)."""
        loads = self.predicted_loads(demands, overhead)
        idle = self.idle_ranks()
        because = f" because {idle_reason(self, demands, whole_streams)}" if idle else ""
        lines = [
            f"SIMT plan for world size {self.world_size}; load = predicted compute per step in "
            f"{unit}, + {overhead:.3g} per task on a rank:"
        ]
        for rank, works in enumerate(self.per_rank):
            items = ", ".join(_describe_work(w) for w in works) or "(idle: see below)"
            note = f"  {rank_notes[rank]}" if rank_notes else ""
            lines.append(f"  rank {rank}: load {loads[rank]:.1f}{note}  {items}")
        efficiency = self.balance_efficiency(demands, overhead)
        lines.append(f"  predicted balance efficiency (mean/max): {efficiency:.3f}")
        lines.append(
            f"  idle ranks: {idle}{because}; read amplification (bytes read / decoded): "
            f"{self.read_amplification(demands):.2f}"
        )
        return "\n".join(lines)


def idle_reason(plan: Plan, demands: list[TaskDemand], whole_streams: bool = False) -> str:
    """Why `plan` leaves ranks without work, in a few words."""
    world = plan.world_size
    if whole_streams:
        streams = sum(d.num_streams for d in demands)
        return f"the static planner hands out whole streams ({streams} for {world} ranks)"
    pieces = sum(d.batch_size // d.granularity for d in demands)
    coupled = sorted(f"{d.name} in groups of {d.granularity}" for d in demands if d.granularity > 1)
    grouped = f"; samples a loss couples go together: {', '.join(coupled)}" if coupled else ""
    if pieces < world:
        return f"fewer samples than ranks ({pieces} indivisible pieces for {world} ranks{grouped})"
    # the divisible planner hands an idle rank work while any rank holds two or more pieces
    return "no rank has a piece to spare without slowing the step"


def _describe_work(w: Work) -> str:
    streams = ",".join(map(str, w.stream_ids))
    start = f" from sample {w.offset} of stream {w.stream_ids[0]}" if w.offset else ""
    return f"{w.task}[streams {streams}; batch {w.local_batch}{start}]"


def check_demands(demands: list[TaskDemand], world_size: int) -> None:
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
        if d.granularity < 1 or d.batch_size % d.granularity:
            raise ValueError(
                f"task {d.name!r}: granularity {d.granularity} must divide its batch {d.batch_size}"
            )
        if d.max_local_batch < 0:
            raise ValueError(
                f"`simt.tasks.{d.name}.max_local_batch`={d.max_local_batch} must be >= 0"
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


def finish_plan(per_rank: list[list[Work]]) -> tuple[tuple[Work, ...], ...]:
    return tuple(tuple(sorted(works, key=lambda w: w.task)) for works in per_rank)


def plan_static(demands: list[TaskDemand], world_size: int) -> Plan:
    """Proportional plan that ignores measured costs; pure and deterministic."""
    check_demands(demands, world_size)
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
    return Plan(world_size, finish_plan(per_rank))


Affinity = dict[str, list[float]]
"""task -> per rank, extra cost per sample of running the task there (e.g. remote lego calls)."""


def present_tasks(demands: list[TaskDemand], step: int) -> set[str]:
    """Tasks that run at `step` (0-based iteration index)."""
    return {d.name for d in demands if step % d.every == 0}
