"""The memory plan: state by ZeRO stage and EP, caps from the device memory, rank peaks (the
prediction against a real run: tests/integration/test_bench_memory.py)."""

from __future__ import annotations

import pytest

from gppf_dist.model.memory import GIB, ActivationMemory, state_memory
from gppf_dist.preflight.memory_plan import MemoryPlan
from gppf_dist.simt.plan import Plan, Work


def test_zero_partitions_the_optimizer_and_then_the_gradients() -> None:
    lego, other, world = 40_000_000, 10_000_000, 8
    plain = state_memory(lego, other, world)
    assert plain.params == plain.grads == 4 * (lego + other)
    assert plain.optimizer == 8 * (lego + other)
    one = state_memory(lego, other, world, zero_stage=1)
    two = state_memory(lego, other, world, zero_stage=2)
    assert one.params == plain.params
    assert one.optimizer == 12 * (lego + other) // world  # moments + the fp32 partition copy
    assert one.grads > plain.grads and two.grads < one.grads
    ep = state_memory(lego, other, world, ep_size=4)
    assert ep.params == 4 * (other + lego // 4)


def _plan(usable_gib: float, state_gib: float = 1.0) -> MemoryPlan:
    mib = 2**20
    lines = {
        "cls": ActivationMemory("cls", 50 * mib, 60 * mib),
        "det": ActivationMemory("det", 50 * mib, 800 * mib),
    }
    state = state_memory(int(state_gib * GIB / 16), 0, 1)  # params + grads + 2 moments = 16 B
    return MemoryPlan(int(usable_gib * GIB), state, lines)


def test_caps_are_the_largest_micro_batch_that_fits_and_a_lower_user_cap_wins() -> None:
    memory = _plan(usable_gib=11.0)
    caps = memory.caps({"cls": 0, "det": 0})
    for task, cap in caps.items():
        line, free = memory.activations[task], memory.usable - memory.state.total
        assert line.at(cap) <= free < line.at(cap + 1)
    assert caps["det"] == (10 * GIB - 50 * 2**20) // (800 * 2**20)
    assert memory.caps({"cls": 0, "det": 3})["det"] == 3
    assert memory.caps({"cls": 0, "det": 10_000})["det"] == caps["det"]


def test_a_task_whose_one_sample_does_not_fit_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"task 'det'.*trainer.device_memory_gib"):
        _plan(usable_gib=1.5).caps({})


def test_a_rank_peaks_at_its_largest_micro_batch() -> None:
    memory = _plan(usable_gib=11.0)
    caps = {"cls": 100, "det": 4}
    plan = Plan(3, ((Work("cls", (0,), 64), Work("det", (0,), 10)), (Work("cls", (1,), 64),), ()))
    peaks = memory.rank_peaks(plan, caps)
    state = memory.state.total
    cls, det = memory.activations["cls"], memory.activations["det"]
    assert peaks[0] == state + max(cls.at(64), det.at(4))
    assert peaks[1] == state + memory.activations["cls"].at(64)
    assert peaks[2] == state  # an idle rank holds its state
