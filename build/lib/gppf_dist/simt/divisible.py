"""Planning SIMT work divisible to the sample: fill every rank up to one makespan.

Every task's per-step global batch is a row of samples (stream 0's share first, then stream 1's,
…). A plan may give any rank any contiguous slice of it (`Work` with an `offset`), so no rank idles
while there are at least as many samples as ranks, and an expensive task spreads over as many
ranks as balance needs. Losses do not depend on the plan (DESIGN.md §5.1).

For a candidate makespan T every rank has capacity T. Tasks are taken from the most expensive
granule down; each walks the ranks (its cheapest first, see `affinity`, else in order) and takes,
on every rank with room, as many samples as fit in what is left (divisible work fills ranks
completely, as in McNaughton's wrap-around rule, and cheap tasks fill the gaps expensive samples
leave). Refinements:

* a per-(rank, task) overhead is charged for every piece (and for every micro-batch when the
  task has a memory cap), so a task is put on a rank only where that pays;
* a task whose loss couples samples within a group (`granularity` > 1, e.g. re-ID's triplet loss
  within one stream's share) is cut at group boundaries only;
* `max_local_batch` caps one forward pass: a larger share runs as several micro-batches
  (`engine/step.py` accumulates them), each charged the overhead;
* `affinity` adds a per-rank cost per sample (expert-parallel lego locality), so a task prefers
  the ranks that hold its legos when that does not cost balance.

A bisection finds the smallest T at which every task fits. One fill is a few vectorised passes
over the ranks per task, so planning for thousands of ranks takes milliseconds. Pure and
deterministic: every rank computes the same plan from the same inputs.
"""

from __future__ import annotations

import numpy as np

from gppf_dist.simt.plan import Affinity, Plan, TaskDemand, Work, check_demands, finish_plan


def _fit(d: TaskDemand, avail: np.ndarray, overhead: float, cost: np.ndarray) -> np.ndarray:
    """Per rank, the most samples of `d` (a multiple of its granularity) taking at most `avail`
    at per-sample cost `cost`."""
    g, m = d.granularity, d.max_local_batch
    eps = 1e-9
    cost = np.maximum(cost, 1e-12)  # a task measured as free still takes whole samples
    if not m:
        n = np.floor((avail - overhead) / cost + eps)
    else:
        batch = overhead + cost * m
        full = np.floor(avail / batch + eps)
        rest = avail - full * batch
        tail = np.clip(np.floor((rest - overhead) / cost + eps), 0, m - 1)
        n = full * m + tail
    n = np.clip(n, 0, d.batch_size).astype(np.int64)
    return n - n % g


def _time(d: TaskDemand, n: np.ndarray, overhead: float, cost: np.ndarray) -> np.ndarray:
    forwards = np.ceil(n / d.max_local_batch) if d.max_local_batch else (n > 0).astype(float)
    return forwards * overhead + cost * n


def _shares(
    demands: list[TaskDemand], makespan: float, overhead: float, costs: list[np.ndarray]
) -> list[np.ndarray] | None:
    """Per task, the samples each rank takes when filling up to `makespan`; None if some task
    does not fit."""
    room = np.full(len(costs[0]), makespan, dtype=np.float64)
    out = []
    for d, cost in zip(demands, costs, strict=True):
        ranks = np.argsort(cost, kind="stable")  # the task's cheapest ranks first
        fit = _fit(d, room[ranks], overhead, cost[ranks])
        total = np.cumsum(fit)
        if total[-1] < d.batch_size:
            return None
        last = int(np.searchsorted(total, d.batch_size))
        fit[last] -= int(total[last]) - d.batch_size
        fit[last + 1 :] = 0
        take = np.zeros_like(fit)
        take[ranks] = fit
        room -= _time(d, take, overhead, cost)
        out.append(take)
    return out


def slice_work(d: TaskDemand, start: int, stop: int) -> Work:
    """Samples [start, stop) of `d`'s global batch: the streams they fall in, and how many
    samples of the first one's share come before the slice."""
    b = d.per_stream_batch
    streams = tuple(range(start // b, -(-stop // b)))
    return Work(d.name, streams, stop - start, offset=start - streams[0] * b)


def plan_divisible(
    demands: list[TaskDemand],
    world_size: int,
    overhead: float = 0.0,
    affinity: Affinity | None = None,
) -> Plan:
    """The fill with the smallest makespan (see the module docstring)."""
    check_demands(demands, world_size)
    order = sorted(demands, key=lambda d: (-d.time(d.granularity), d.name))
    affinity = affinity or {}
    costs = [
        d.cost_per_sample + np.asarray(affinity.get(d.name, [0.0] * world_size), dtype=float)
        for d in order
    ]
    total = sum(d.time(d.batch_size) for d in order)
    lo = max(total / world_size, max(d.time(d.granularity, overhead) for d in order))
    hi = lo
    while _shares(order, hi, overhead, costs) is None:
        lo, hi = hi, hi * 2
    for _ in range(60):  # bisection to relative precision 1e-6
        if hi - lo <= 1e-6 * hi:
            break
        mid = (lo + hi) / 2
        if _shares(order, mid, overhead, costs) is None:
            lo = mid
        else:
            hi = mid
    shares = _shares(order, hi, overhead, costs)
    assert shares is not None
    _use_idle_ranks(order, shares, overhead, costs)
    per_rank: list[list[Work]] = [[] for _ in range(world_size)]
    for d, take in zip(order, shares, strict=True):
        start = 0
        for rank in np.flatnonzero(take):
            n = int(take[rank])
            per_rank[int(rank)].append(slice_work(d, start, start + n))
            start += n
    return Plan(world_size, finish_plan(per_rank))


def _use_idle_ranks(
    demands: list[TaskDemand], shares: list[np.ndarray], overhead: float, costs: list[np.ndarray]
) -> None:
    """The fill can finish before the last ranks (or leave ranks empty when one indivisible
    sample sets the makespan). Idle ranks take work from the most loaded ranks that can give
    some, one each per round: half of the donor's largest piece when that piece has two
    granules or more, else a whole piece when it has several."""
    cost = np.stack(costs)
    grain = np.array([d.granularity for d in demands])[:, None]
    take = np.stack(shares)
    while True:
        granules = take // grain
        pieces = (granules > 0).sum(axis=0)
        idle = np.flatnonzero(pieces == 0)
        largest = granules.max(axis=0)
        loads = sum(_time(d, t, overhead, c) for d, t, c in zip(demands, take, cost, strict=True))
        can_give = np.flatnonzero((largest >= 2) | (pieces >= 2))
        if idle.size == 0 or can_give.size == 0:
            break
        donors = can_give[np.argsort(-loads[can_give], kind="stable")][: idle.size]
        idle = idle[: donors.size]
        task = np.argmax(granules[:, donors], axis=0)
        have = granules[task, donors]
        moved = np.where(largest[donors] >= 2, have // 2, have) * grain[task, 0]
        np.subtract.at(take, (task, donors), moved)
        np.add.at(take, (task, idle), moved)
    for j, row in enumerate(take):
        shares[j][:] = row
