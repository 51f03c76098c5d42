"""The cost table the planner reads: warm-up steps under new batch shapes are not costs."""

from __future__ import annotations

import pytest

from gppf_dist.simt.costs import CostTable


def _run(table: CostTable, steps: range, slow_first: set[int]) -> None:
    """det costs 0.01 s per sample; a step that first runs new shapes takes 10x (cuDNN's
    autotuner and the allocator). A re-plan at each step of `slow_first` changed the shapes."""
    for step in steps:
        if step == steps.start or step in slow_first:
            table.shapes_changed(step)
        seconds = 0.01 * 32 * (10 if step == steps.start or step in slow_first else 1)
        table.observe(step, {"det": seconds}, {"det": 32})


def test_the_first_step_under_new_shapes_is_left_out() -> None:
    table = CostTable()
    table.shapes_changed(10)
    table.observe(10, {"det": 3.2, "seg": 6.4}, {"det": 32, "seg": 32})
    assert table.per_sample_s == {}
    table.observe(11, {"det": 0.32, "seg": 0.64}, {"det": 32, "seg": 32})
    assert table.cost("det") == pytest.approx(0.01) and table.cost("seg") == pytest.approx(0.02)


def test_re_plans_do_not_inflate_the_costs_they_are_planned_on() -> None:
    """simt.replan_every=5, each re-plan changing the shapes: the costs read by the re-plan at
    step 30 used to include step 25's autotuning (1.7x det's real cost); now they are exact."""
    slow = {5, 10, 15, 20, 25}
    table = CostTable()
    _run(table, range(0, 30), slow_first=slow)
    assert table.cost("det") == pytest.approx(0.01)
    unguarded = CostTable()
    for step in range(0, 30):
        unguarded.update("det", 0.01 * 32 * (10 if step in slow | {0} else 1), 32)
    assert unguarded.cost("det") > 0.015  # what the planner saw before
