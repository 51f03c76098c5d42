"""Measured per-task cost table that drives the cost-aware planner.

Each step, every rank's per-task compute seconds are all-reduced (see engine/step.py), so all
ranks update the table with identical numbers and re-plan identically without talking. Costs are
rounded to 3 significant digits before planning so reduction-order noise cannot split ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def _round3(x: float) -> float:
    if x <= 0:
        return 0.0
    return round(x, 2 - int(math.floor(math.log10(x))))


@dataclass
class CostTable:
    momentum: float = 0.8
    per_sample_s: dict[str, float] = field(default_factory=dict)
    """Exponential moving average of compute seconds per sample, per task."""

    def update(self, task: str, seconds: float, samples: int) -> None:
        if samples <= 0 or seconds <= 0:
            return
        value = seconds / samples
        old = self.per_sample_s.get(task)
        self.per_sample_s[task] = (
            value if old is None else self.momentum * old + (1 - self.momentum) * value
        )

    def cost(self, task: str) -> float | None:
        value = self.per_sample_s.get(task)
        return None if value is None else _round3(value)

    def complete(self, tasks: list[str]) -> bool:
        return all(t in self.per_sample_s for t in tasks)

    def state_dict(self) -> dict[str, object]:
        return {"momentum": self.momentum, "per_sample_s": dict(self.per_sample_s)}

    @classmethod
    def from_state(cls, state: dict[str, object] | None) -> CostTable:
        if not state:
            return cls()
        return cls(float(state["momentum"]), dict(state["per_sample_s"]))  # type: ignore[arg-type]
