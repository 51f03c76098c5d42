"""Pure canonical-stream arithmetic: shard ownership, epoch plans, eval ranges, RNG keys."""

from __future__ import annotations

import numpy as np
import pytest

from gppf_dist.data.load.streams import epoch_plan, eval_range, sample_rng, stream_shards, task_seed


def test_stream_shards_partition_all_shards() -> None:
    owned = [stream_shards("t", 10, 3, k) for k in range(3)]
    assert owned == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_stream_shards_errors_name_task_and_numbers() -> None:
    with pytest.raises(ValueError, match=r"task 'det'.*2 shards.*num_streams=4"):
        stream_shards("det", 2, 4, 0)
    with pytest.raises(ValueError, match="num_streams must be >= 1, got 0"):
        stream_shards("det", 2, 0, 0)


@pytest.mark.parametrize("group", [1, 2, 3, 5])
def test_epoch_plan_is_a_permutation_of_the_stream(group: int) -> None:
    ids = [1, 4, 7, 10]
    sizes = {1: 5, 4: 0, 7: 3, 10: 6}
    plan = epoch_plan(
        task="t",
        seed=3,
        stream=1,
        epoch=2,
        shard_ids=ids,
        shard_sizes=sizes,
        shards_per_group=group,
    )
    assert plan.length == 14
    visited = []
    for index in range(plan.length):
        g, offset = plan.group_at(index)
        grp = plan.groups[g]
        visited.append(grp.locate(int(grp.order[offset])))
    assert sorted(visited) == [(s, i) for s in ids for i in range(sizes[s])]


def test_epoch_plan_deterministic_and_varies_by_epoch_stream_seed() -> None:
    def order(**kw: int) -> list[tuple[int, int]]:
        args = dict(seed=0, stream=0, epoch=0) | kw
        plan = epoch_plan(
            task="t",
            shard_ids=list(range(8)),
            shard_sizes=dict.fromkeys(range(8), 4),
            shards_per_group=2,
            **args,
        )
        return [g.locate(int(i)) for g in plan.groups for i in g.order]

    base = order()
    assert base == order()
    assert base != order(epoch=1) and base != order(stream=1) and base != order(seed=1)


def test_epoch_plan_rejects_empty_stream() -> None:
    with pytest.raises(ValueError, match="stream 2 has no samples"):
        epoch_plan(task="t", seed=0, stream=2, epoch=0, shard_ids=[2], shard_sizes={2: 0})


@pytest.mark.parametrize(("n", "parts"), [(0, 3), (5, 1), (5, 7), (100, 8), (101, 3)])
def test_eval_ranges_tile_the_split(n: int, parts: int) -> None:
    ranges = [eval_range(n, parts, p) for p in range(parts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_eval_range_rejects_bad_part() -> None:
    with pytest.raises(ValueError, match="3/3"):
        eval_range(10, 3, 3)


def test_sample_rng_is_keyed() -> None:
    draw = sample_rng(1, "t", 2, 3, 4).random(4)
    assert np.array_equal(draw, sample_rng(1, "t", 2, 3, 4).random(4))
    for other in (
        sample_rng(1, "t", 2, 3, 5),
        sample_rng(1, "u", 2, 3, 4),
        sample_rng(2, "t", 2, 3, 4),
        sample_rng(1, "t", 2, 4, 4),
    ):
        assert not np.array_equal(draw, other.random(4))
    assert task_seed("det") == task_seed("det") != task_seed("seg")
