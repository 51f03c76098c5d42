"""Which EP rank holds which lego, chosen from frozen routes so that tasks find their legos at
home. Pure; no process groups.

With the contiguous split a task whose top-k legos straddle the blocks sends its activations to
other ranks in every layer, wherever the SIMT planner puts it. Once routes are frozen the legos
each task uses are known, so:

  1. tasks are grouped into E groups of similar cost (one per EP rank), each task joining the
     group whose chosen legos overlap its own most (ties: the lighter group), heaviest first;
  2. in every layer each rank takes, up to its N/E legos, the legos its group's tasks use most
     (weighted by task cost), greedily by weight; unclaimed legos fill the remaining places;
  3. each task is re-homed to its most local rank under that placement (costs kept balanced),
     and 2–3 repeat a few rounds; the candidate with the highest predicted local fraction wins,
     the contiguous split included.

The SIMT planner's locality term (`parallel.remote_lego_cost`) then prefers to run a task on a
rank of its group. The result is deterministic: every rank computes the same placement.
"""

from __future__ import annotations

Selections = dict[str, list[list[int]]]
"""task -> per lego layer, the lego ids its frozen route selects."""


def group_tasks(selections: Selections, costs: dict[str, float], groups: int) -> list[list[str]]:
    """Tasks in `groups` groups of similar total cost, similar lego choices together."""
    total = sum(costs[t] for t in selections)
    cap = total / groups * 1.25  # some imbalance buys locality; the SIMT planner rebalances
    members: list[list[str]] = [[] for _ in range(groups)]
    load = [0.0] * groups
    chosen: list[set[tuple[int, int]]] = [set() for _ in range(groups)]
    for task in sorted(selections, key=lambda t: (-costs[t], t)):
        mine = {(layer, i) for layer, ids in enumerate(selections[task]) for i in ids}
        fits = [g for g in range(groups) if load[g] + costs[task] <= cap] or list(range(groups))
        best = max(fits, key=lambda g: (len(mine & chosen[g]), -load[g], -g))
        members[best].append(task)
        load[best] += costs[task]
        chosen[best] |= mine
    return members


def _assign(
    selections: Selections, costs: dict[str, float], members: list[list[str]], num_legos: int
) -> tuple[tuple[int, ...], ...]:
    """Per layer, each rank takes (up to N/E) the legos its members use most, by cost."""
    ep_size = len(members)
    per_rank = num_legos // ep_size
    num_layers = len(next(iter(selections.values())))
    placement = []
    for layer in range(num_layers):
        weight = [[0.0] * num_legos for _ in range(ep_size)]
        for rank, tasks in enumerate(members):
            for task in tasks:
                for i in selections[task][layer]:
                    weight[rank][i] += costs[task]
        owner = [-1] * num_legos
        free = [per_rank] * ep_size
        claims = sorted(
            ((weight[r][i], r, i) for r in range(ep_size) for i in range(num_legos)),
            key=lambda c: (-c[0], c[1], c[2]),
        )
        for w, rank, lego in claims:
            if w > 0 and owner[lego] < 0 and free[rank] > 0:
                owner[lego], free[rank] = rank, free[rank] - 1
        for lego in range(num_legos):  # legos no task of any group claimed
            if owner[lego] < 0:
                rank = next(r for r in range(ep_size) if free[r] > 0)
                owner[lego], free[rank] = rank, free[rank] - 1
        placement.append(tuple(owner))
    return tuple(placement)


def balanced_homes(
    selections: Selections,
    costs: dict[str, float],
    placement: tuple[tuple[int, ...], ...],
    ep_size: int,
) -> dict[str, int]:
    """A home rank per task under `placement`: heaviest first, the most local rank among those
    its cost fits (total / E, 25% slack), else the lightest."""
    cap = sum(costs[t] for t in selections) / ep_size * 1.25
    load = [0.0] * ep_size
    home: dict[str, int] = {}
    for task in sorted(selections, key=lambda t: (-costs[t], t)):
        fits = [r for r in range(ep_size) if load[r] + costs[task] <= cap] or [
            min(range(ep_size), key=lambda r: (load[r], r))
        ]
        best = max(
            fits,
            key=lambda r: (local_fraction({task: selections[task]}, costs, placement, {task: r}),
                           -load[r], -r),
        )  # fmt: skip
        home[task] = best
        load[best] += costs[task]
    return home


def predicted_local(
    selections: Selections,
    costs: dict[str, float],
    placement: tuple[tuple[int, ...], ...],
    ep_size: int,
) -> float:
    """Local fraction of `placement` with every task at its balanced home."""
    home = balanced_homes(selections, costs, placement, ep_size)
    return local_fraction(selections, costs, placement, home)


def contiguous(num_layers: int, num_legos: int, ep_size: int) -> tuple[tuple[int, ...], ...]:
    per_rank = num_legos // ep_size
    return tuple(tuple(i // per_rank for i in range(num_legos)) for _ in range(num_layers))


def place_legos(
    selections: Selections, costs: dict[str, float], num_legos: int, ep_size: int, rounds: int = 4
) -> tuple[tuple[int, ...], ...]:
    """Per lego layer, the EP rank of each lego (each rank num_legos / ep_size of them).

    Alternates `rounds` times between placing legos for task groups and re-homing the tasks
    under that placement; keeps the candidate with the highest predicted local fraction, the
    contiguous split included (so it is never predicted worse than the default)."""
    num_layers = len(next(iter(selections.values())))
    candidates = [contiguous(num_layers, num_legos, ep_size)]
    members = group_tasks(selections, costs, ep_size)
    for _ in range(rounds):
        candidates.append(_assign(selections, costs, members, num_legos))
        home = balanced_homes(selections, costs, candidates[-1], ep_size)
        members = [[t for t in selections if home[t] == r] for r in range(ep_size)]
    scores = [predicted_local(selections, costs, c, ep_size) for c in candidates]
    return candidates[max(range(len(candidates)), key=lambda j: (round(scores[j], 12), -j))]


def local_fraction(
    selections: Selections,
    costs: dict[str, float],
    placement: tuple[tuple[int, ...], ...],
    home: dict[str, int],
) -> float:
    """Cost-weighted fraction of lego calls served by the task's own rank (`home`: EP rank)."""
    local = total = 0.0
    for task, layers in selections.items():
        for layer, ids in enumerate(layers):
            for i in ids:
                total += costs[task]
                local += costs[task] * (placement[layer][i] == home[task])
    return local / total if total else 1.0
