"""The metrics line reports dropped targets apart from skipped samples, when the step has them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gppf_dist.logging.record import step_record


@dataclass
class Stats:
    task_loss_sums: torch.Tensor = field(default_factory=lambda: torch.tensor([4.0, 2.0]))
    skipped: torch.Tensor = field(default_factory=lambda: torch.tensor([0.0, 1.0]))
    task_seconds: torch.Tensor = field(default_factory=lambda: torch.tensor([0.5, 0.25]))
    rank_busy_s: torch.Tensor = field(default_factory=lambda: torch.tensor([1.0]))
    regularizer: float = 0.0
    grad_norm: float = 1.0
    data_s: float = 0.1
    lego_calls: tuple[float, float] = (0.0, 0.0)


@dataclass
class StatsWithDropped(Stats):
    dropped: torch.Tensor = field(default_factory=lambda: torch.tensor([7.0, 0.0]))


def _record(stats: Stats) -> dict[str, object]:
    return step_record(3, stats, {"det": 4, "pose": 2}, {"det": 1.0, "pose": 1.0},
                       {"det", "pose"}, step_s=1.0, lr=0.1)  # fmt: skip


def test_dropped_targets_are_their_own_metric() -> None:
    record = _record(StatsWithDropped())
    assert record["data/dropped/det"] == 7 and record["data/dropped/pose"] == 0
    assert record["data/skipped/det"] == 0 and record["data/skipped/pose"] == 1


def test_without_dropped_counts_the_record_is_unchanged() -> None:
    record = _record(Stats())
    assert not any(k.startswith("data/dropped/") for k in record)
    assert record["data/skipped/pose"] == 1
