"""Lego placement from frozen routes: valid (N/E legos per EP rank and layer), deterministic, and
co-locating what tasks use together."""

from __future__ import annotations

import random

import pytest

from gppf_dist.parallel.placement import (
    contiguous,
    group_tasks,
    local_fraction,
    place_legos,
    predicted_local,
)
from gppf_dist.parallel.plan import EPLayout

CONTIGUOUS = ((0, 0, 1, 1), (0, 0, 1, 1))


def test_tasks_with_disjoint_legos_become_fully_local() -> None:
    # a, b use legos {0, 3}; c, d use {1, 2}: the contiguous split makes every task half remote.
    selections = {
        "a": [[0, 3], [0, 3]],
        "b": [[3, 0], [0, 3]],
        "c": [[1, 2], [2, 1]],
        "d": [[2, 1], [1, 2]],
    }
    costs = dict.fromkeys(selections, 1.0)
    placement = place_legos(selections, costs, num_legos=4, ep_size=2)
    EPLayout(2, 2, 4, placement)  # valid: two legos per rank and layer
    groups = group_tasks(selections, costs, 2)
    assert sorted(map(sorted, groups)) == [["a", "b"], ["c", "d"]]
    home = {t: g for g, tasks in enumerate(groups) for t in tasks}
    assert local_fraction(selections, costs, placement, home) == 1.0
    best_contiguous = max(
        local_fraction(selections, costs, CONTIGUOUS, {t: r for t in selections}) for r in (0, 1)
    )
    assert best_contiguous == 0.5


def test_groups_balance_cost_before_overlap() -> None:
    # Everyone wants the same legos: overlap cannot decide, cost balance does.
    selections = {t: [[0, 1]] for t in "abcd"}
    costs = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    groups = group_tasks(selections, costs, 2)
    loads = sorted(sum(costs[t] for t in g) for g in groups)
    assert loads == [5.0, 5.0]
    placement = place_legos(selections, costs, num_legos=4, ep_size=2)
    assert placement == place_legos(dict(reversed(selections.items())), costs, 4, 2)
    assert sorted(placement[0]) == [0, 0, 1, 1]


def test_unused_legos_fill_the_free_places() -> None:
    selections = {"a": [[0, 1]], "b": [[0, 1]]}
    placement = place_legos(selections, {"a": 1.0, "b": 1.0}, num_legos=8, ep_size=4)
    assert sorted(placement[0]) == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    "placement",
    [((0, 0, 0, 1),), ((0, 1, 0),), ((0, 1, 2, 1),)],
)
def test_unbalanced_placements_are_rejected(placement: tuple[tuple[int, ...], ...]) -> None:
    with pytest.raises(ValueError, match="lego placement of layer 0"):
        EPLayout(2, 2, 4, placement)


def test_layout_uses_the_placement_per_layer() -> None:
    layout = EPLayout(4, 2, 4, ((1, 0, 0, 1), (0, 1, 0, 1)))
    assert layout.owned(0, 0) == [1, 2] and layout.owned(0, 1) == [0, 2]
    assert layout.owner(3, 0) == 1 and layout.owner(3, 1) == 1
    assert EPLayout(4, 2, 4).owned(1, 5) == [2, 3]  # contiguous by default, any layer


@pytest.mark.parametrize("seed", range(20))
def test_never_predicted_worse_than_the_contiguous_split(seed: int) -> None:
    rng = random.Random(seed)
    legos, ep, layers = rng.choice([(4, 2, 3), (8, 2, 4), (8, 4, 2)])
    selections = {f"t{j}": [rng.sample(range(legos), 2) for _ in range(layers)] for j in range(6)}
    costs = {t: rng.uniform(0.5, 3.0) for t in selections}
    placement = place_legos(selections, costs, legos, ep)
    EPLayout(ep, ep, legos, placement)
    assert predicted_local(selections, costs, placement, ep) >= predicted_local(
        selections, costs, contiguous(layers, legos, ep), ep
    )
