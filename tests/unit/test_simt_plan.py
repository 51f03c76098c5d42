"""The SIMT planner: pure, deterministic, covers every stream of every task exactly once."""

from __future__ import annotations

import pytest

from gppf_dist.simt.plan import (
    TaskDemand,
    make_plan,
    plan_cost_aware,
    plan_static,
    present_tasks,
)

TASKS = ["attr", "cls_object", "cls_scene", "det", "face", "pose", "reid", "seg"]


def demands(cost: dict[str, float] | None = None, streams: int = 4) -> list[TaskDemand]:
    cost = cost or {}
    return [TaskDemand(t, 16, streams, 1.0, cost.get(t, 1.0)) for t in TASKS]


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7, 8, 9, 16, 32, 40])
def test_every_stream_read_by_exactly_one_rank(world: int) -> None:
    plan = plan_static(demands(), world)
    seen: dict[str, list[int]] = {t: [] for t in TASKS}
    for works in plan.per_rank:
        for w in works:
            seen[w.task].extend(w.stream_ids)
            assert w.local_batch == 4 * len(w.stream_ids)
    for task, streams in seen.items():
        assert sorted(streams) == [0, 1, 2, 3], task


def test_plan_is_deterministic_and_order_independent() -> None:
    a = plan_static(demands(), 3)
    b = plan_static(list(reversed(demands())), 3)
    assert a == b


def test_fewer_ranks_than_tasks_packs_whole_tasks_balanced() -> None:
    plan = plan_static(demands(), 3)
    counts = sorted(len(w) for w in plan.per_rank)
    assert counts == [2, 3, 3]
    assert all(len(w.stream_ids) == 4 for works in plan.per_rank for w in works)


def test_static_groups_are_proportional_to_batch_size() -> None:
    mix = [TaskDemand(t, 64 if t == "det" else 16, 4) for t in TASKS]
    plan = plan_static(mix, 16)
    assert len(plan.task_ranks("det")) == 4  # the largest batch, capped by its 4 streams
    assert all(len(plan.task_ranks(t)) >= 1 for t in TASKS)


def test_more_ranks_than_streams_leaves_idle_ranks() -> None:
    plan = plan_static(demands(streams=1), 10)
    assert sum(1 for works in plan.per_rank if not works) == 2


def test_batch_not_multiple_of_streams_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"simt.tasks.det.batch_size`=10"):
        plan_static([TaskDemand("det", 10, 4)], 2)


def test_describe_reports_balance() -> None:
    text = plan_static(demands(), 3).describe(demands())
    assert "rank 2" in text and "balance efficiency" in text


# A 10x cost spread, as between detection/segmentation and classification-size tasks.
SPREAD = {"det": 10.0, "seg": 6.0, "pose": 2.0}


@pytest.mark.parametrize(("world", "streams"), [(3, 4), (4, 4), (8, 4), (16, 8)])
def test_cost_aware_plan_balances_a_10x_cost_spread(world: int, streams: int) -> None:
    # A task can use at most S_t ranks, so wide worlds need enough canonical streams.
    mix = demands(SPREAD, streams=streams)
    static = plan_static(mix, world).balance_efficiency(mix)
    cost = plan_cost_aware(mix, world).balance_efficiency(mix)
    assert cost >= 0.9, cost
    assert static < 0.9, static


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8, 13, 16, 40])
def test_cost_aware_plan_reads_every_stream_once(world: int) -> None:
    plan = plan_cost_aware(demands(SPREAD), world, overhead=2.0)
    for task in TASKS:
        ids = sorted(
            i for works in plan.per_rank for w in works if w.task == task for i in w.stream_ids
        )
        assert ids == [0, 1, 2, 3]


def test_overhead_keeps_cheap_tasks_whole() -> None:
    plan = plan_cost_aware(demands(), 3, overhead=100.0)
    assert all(len(w.stream_ids) == 4 for works in plan.per_rank for w in works)


def test_make_plan_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="`simt.planner`='fast'"):
        make_plan("fast", demands(), 2)


def test_present_tasks_follow_every() -> None:
    mix = [TaskDemand("a", 4, 4), TaskDemand("b", 4, 4, every=2)]
    assert [sorted(present_tasks(mix, s)) for s in range(3)] == [["a", "b"], ["a"], ["a", "b"]]


def test_locality_affinity_puts_tasks_where_their_legos_live() -> None:
    # Two equal tasks on two ranks; task "a"'s legos live on rank 1, task "b"'s on rank 0.
    mix = [TaskDemand("a", 8, 4), TaskDemand("b", 8, 4)]
    plan = plan_cost_aware(mix, 2, overhead=1.0, affinity={"a": [0.5, 0.0], "b": [0.0, 0.5]})
    assert plan.task_ranks("a") == (1,) and plan.task_ranks("b") == (0,)
    flipped = plan_cost_aware(mix, 2, overhead=1.0, affinity={"a": [0.0, 0.5], "b": [0.5, 0.0]})
    assert flipped.task_ranks("a") == (0,) and flipped.task_ranks("b") == (1,)


def test_locality_never_outweighs_balance() -> None:
    # Everything prefers rank 0, but piling all tasks there would be slower than paying the
    # remote-call cost: the plan stays balanced.
    mix = demands()
    affinity = {t: [0.0, 0.1, 0.1, 0.1] for t in TASKS}
    plan = plan_cost_aware(mix, 4, affinity=affinity)
    assert all(works for works in plan.per_rank)
