"""`gppf-bench memory --check`: the fake-tensor prediction of a forward + backward against the
same shapes run for real on this CPU, each in fresh processes (`python -m gppf_dist.bench.memory
--measure`)."""

from __future__ import annotations

from gppf_dist.bench.memory import CHECK_SHAPES, check


def test_the_prediction_is_within_15_percent_of_the_measured_cpu_peak() -> None:
    rows = check(CHECK_SHAPES)
    assert len(rows) == len(CHECK_SHAPES)
    for row in rows:
        assert row["measured_mib"] > 150, row  # far above the resident-set noise
        assert 0.85 <= row["ratio"] <= 1.15, row
