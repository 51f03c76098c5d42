"""Measured per-task cost table that drives the cost-aware planner.

Each step, every rank's per-task compute seconds are all-reduced (see engine/step.py), so all
ranks update the table with identical numbers and re-plan identically without talking. Costs are
rounded to 3 significant digits before planning so reduction-order noise cannot split ranks.

The first step under new batch shapes (the run's or a resumed run's first step, and the first
after a re-plan that changed the plan) is not a cost: cuDNN's autotuner tries its algorithms
for every new shape and the caching allocator grows, so that step runs several times slower
than the ones after it. `shapes_changed(step)` marks it, and `observe` leaves its times out.
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

    warmup_step: int | None = None
    """The step that ran first under the current batch shapes (its times are left out)."""

    def shapes_changed(self, step: int) -> None:
        """Step `step` is the first to run under new batch shapes."""
        self.warmup_step = step

    def observe(self, step: int, seconds: dict[str, float], samples: dict[str, int]) -> None:
        """Step `step`'s compute seconds per task, unless it was a warm-up step."""
        if step == self.warmup_step:
            return
        for task, s in seconds.items():
            self.update(task, s, samples[task])

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
