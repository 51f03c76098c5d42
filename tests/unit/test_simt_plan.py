"""The SIMT planner: pure, deterministic, covers every stream of every task exactly once."""

from __future__ import annotations

import pytest

from gppf_dist.simt.divisible import plan_divisible
from gppf_dist.simt.plan import Plan, TaskDemand, Work, plan_static, present_tasks
from gppf_dist.simt.taskset import make_plan

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
    cost = plan_divisible(mix, world).balance_efficiency(mix)
    assert cost >= 0.9, cost
    assert static < 0.9, static


def samples_of(plan: Plan, task: str, per_stream: int) -> list[int]:
    """The global-batch sample indices the plan trains on for `task`, over all ranks."""
    out = []
    for works in plan.per_rank:
        for w in works:
            if w.task == task:
                start = w.stream_ids[0] * per_stream + w.offset
                assert start + w.local_batch <= (w.stream_ids[-1] + 1) * per_stream
                out += range(start, start + w.local_batch)
    return sorted(out)


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8, 13, 16, 40, 128])
def test_cost_aware_plan_trains_every_sample_once(world: int) -> None:
    plan = plan_divisible(demands(SPREAD), world, overhead=2.0)
    for task in TASKS:
        assert samples_of(plan, task, 4) == list(range(16))
    if world <= 8 * 16:
        assert plan.idle_ranks() == 0  # at least as many samples as ranks: nobody idles


def test_overhead_keeps_cheap_tasks_whole() -> None:
    plan = plan_divisible(demands(), 3, overhead=100.0)
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
    plan = plan_divisible(mix, 2, overhead=1.0, affinity={"a": [0.5, 0.0], "b": [0.0, 0.5]})
    assert plan.task_ranks("a") == (1,) and plan.task_ranks("b") == (0,)
    flipped = plan_divisible(mix, 2, overhead=1.0, affinity={"a": [0.0, 0.5], "b": [0.5, 0.0]})
    assert flipped.task_ranks("a") == (0,) and flipped.task_ranks("b") == (1,)


def test_locality_never_outweighs_balance() -> None:
    # Everything prefers rank 0, but piling all tasks there would be slower than paying the
    # remote-call cost: the plan stays balanced.
    mix = demands()
    affinity = {t: [0.0, 0.1, 0.1, 0.1] for t in TASKS}
    plan = plan_divisible(mix, 4, affinity=affinity)
    assert all(works for works in plan.per_rank)


# The reference profile of the cluster-scale issue: (cost per sample, global batch).
REFERENCE = {
    "attr": (1.0, 2048),
    "cls_object": (1.0, 4096),
    "cls_scene": (1.0, 4096),
    "det": (12.0, 1024),
    "face": (0.25, 4096),
    "pose": (1.3, 2048),
    "reid": (0.6, 2048),
    "seg": (5.0, 1024),
}


def reference(world: int) -> list[TaskDemand]:
    streams = max(1, world // 4)
    return [
        TaskDemand(t, b, streams, 1.0, c, granularity=b // streams if t == "reid" else 1)
        for t, (c, b) in REFERENCE.items()
    ]


@pytest.mark.parametrize("world", [64, 256, 1024])
def test_reference_profile_is_balanced_with_no_idle_rank(world: int) -> None:
    mix = reference(world)
    plan = plan_divisible(mix, world, overhead=0.5)
    assert plan.balance_efficiency(mix, 0.5) >= 0.97
    assert plan.idle_ranks() == 0
    for d in mix:
        assert samples_of(plan, d.name, d.per_stream_batch) == list(range(d.batch_size))


def test_coupled_tasks_are_cut_at_group_boundaries_only() -> None:
    mix = [TaskDemand("reid", 64, 8, granularity=8), TaskDemand("cls", 64, 8)]
    plan = plan_divisible(mix, 24)
    for works in plan.per_rank:
        for w in works:
            if w.task == "reid":
                assert w.offset == 0 and w.local_batch % 8 == 0, w


def test_memory_caps_charge_one_overhead_per_micro_batch() -> None:
    capped = TaskDemand("det", 12, 1, cost_per_sample=1.0, max_local_batch=4)
    assert capped.time(12, overhead=2.0) == 3 * 2.0 + 12
    assert capped.time(5, overhead=2.0) == 2 * 2.0 + 5
    free = TaskDemand("det", 12, 1, cost_per_sample=1.0)
    one = plan_divisible([free], 1, overhead=2.0)
    split = plan_divisible([capped], 1, overhead=2.0)
    assert one.predicted_loads([free], 2.0) == [14.0]
    assert split.predicted_loads([capped], 2.0) == [18.0]


def test_a_cap_below_the_group_still_cuts_at_group_boundaries() -> None:
    """The step runs such a share in embed and replay passes; the plan still keeps groups whole."""
    plan = plan_divisible([TaskDemand("reid", 32, 4, granularity=8, max_local_batch=6)], 3)
    works = [w for r in range(3) for w in plan.rank_work(r)]
    assert sum(w.local_batch for w in works) == 32
    assert all(w.local_batch % 8 == 0 and w.offset % 8 == 0 for w in works), works


def test_a_negative_cap_names_the_key() -> None:
    with pytest.raises(ValueError, match="`simt.tasks.reid.max_local_batch`=-1"):
        plan_divisible([TaskDemand("reid", 32, 4, granularity=8, max_local_batch=-1)], 2)


def test_read_amplification_follows_the_loaders_rule() -> None:
    from gppf_dist.data.load import stream_reader
    from gppf_dist.simt import plan as plan_module

    assert plan_module.READ_WHOLE_ABOVE == stream_reader.READ_WHOLE_ABOVE
    d = TaskDemand("cls", 16, 2)  # shares of 8
    plan = Plan(2, ((Work("cls", (0, 1), 10),), (Work("cls", (1,), 6, offset=2),)))
    # rank 0: stream 0 whole (8 of 8), 2 of stream 1's 8 read one by one; rank 1: 6 of 8, whole
    assert plan.read_amplification([d]) == pytest.approx((8 + 2 + 8) / 16)
    assert plan.read_amplification([d], indexed=False) == pytest.approx((8 + 8 + 8) / 16)


def test_few_streams_over_many_ranks_read_little_more_than_they_decode() -> None:
    """4 streams per task over 64 ranks: every stream's share is cut among many ranks, each
    reading its own samples by byte range."""
    batches = {"a": 16, "b": 16, "c": 8, "d": 64}
    demands = [
        TaskDemand(t, b, 4, cost_per_sample=1.0 + i) for i, (t, b) in enumerate(batches.items())
    ]
    plan = plan_divisible(demands, 64)
    assert plan.read_amplification(demands) <= 1.5
    assert plan.read_amplification(demands, indexed=False) > 1.5


def test_describe_states_the_load_unit_and_why_ranks_idle() -> None:
    coupled = [TaskDemand("cls", 4, 2), TaskDemand("reid", 8, 2, granularity=4)]
    text = plan_divisible(coupled, 8).describe(coupled)
    assert "load = predicted compute per step in cost units" in text
    assert text.count("(idle: see below)") == 2
    assert (
        "idle ranks: 2 because fewer samples than ranks (6 indivisible pieces for 8 ranks; " in text
    )
    assert "reid in groups of 4" in text
    static = plan_static(demands(streams=1), 10).describe(demands(streams=1), whole_streams=True)
    assert "idle ranks: 2 because the static planner hands out whole streams (8 for 10" in static
    busy = plan_divisible(coupled, 2).describe(coupled, unit="seconds: x")
    assert "idle ranks: 0;" in busy and "in seconds: x," in busy and "(idle" not in busy
