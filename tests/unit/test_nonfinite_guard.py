"""Counting skipped non-finite steps (`health/nonfinite.py`) from real step records."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from gppf_dist.health.nonfinite import NonFiniteError, NonFiniteGuard
from gppf_dist.logging.record import step_record


@dataclass
class _Stats:
    task_loss_sums: torch.Tensor
    grad_norm: float
    skipped: torch.Tensor = torch.zeros(2)
    task_seconds: torch.Tensor = torch.zeros(2)
    rank_busy_s: torch.Tensor = torch.ones(2)
    regularizer: float = 0.0
    data_s: float = 0.0
    lego_calls: tuple[float, float] = (0.0, 0.0)


def _record(det: float, norm: float) -> dict:
    stats = _Stats(torch.tensor([1.0, det], dtype=torch.float64), norm)
    return step_record(1, stats, {"cls": 4, "det": 4}, {"cls": 1.0, "det": 1.0},
                       {"cls", "det"}, 1.0, 1e-3)  # fmt: skip


def test_a_record_names_the_task_whose_loss_was_not_finite() -> None:
    record = _record(math.nan, math.nan)
    assert record["update_skipped"] == 1
    assert record["nonfinite/det"] == 1 and record["nonfinite/cls"] == 0
    clean = _record(2.0, 0.5)
    assert clean["update_skipped"] == 0 and "nonfinite/det" not in clean


def test_the_guard_stops_after_the_limit_in_a_row(capsys: pytest.CaptureFixture) -> None:
    guard = NonFiniteGuard(limit=2)
    guard.check(1, _record(math.nan, math.nan), announce=True)
    guard.check(2, _record(2.0, 0.5), announce=True)  # a clean step resets the count
    guard.check(3, _record(math.nan, math.inf), announce=True)
    assert "step 3: non-finite loss of det: update skipped" in capsys.readouterr().out
    with pytest.raises(NonFiniteError, match="stopping at step 4: 2 steps in a row .* det"):
        guard.check(4, _record(math.inf, math.nan), announce=False)


def test_finite_losses_with_non_finite_gradients_say_so() -> None:
    guard = NonFiniteGuard(limit=1)
    with pytest.raises(NonFiniteError, match="gradients"):
        guard.check(1, _record(2.0, math.nan), announce=False)
