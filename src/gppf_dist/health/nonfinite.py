"""Steps whose loss or gradients were not finite: announced, counted, and fatal when they repeat.

The step itself already left every parameter and optimizer state unchanged (`reduction.py`:
fused optimizers skip on the device; DeepSpeed's ZeRO skips on its own overflow check). Here
the run learns of it from the step's statistics, identical on every rank, so every rank counts
alike and every rank stops at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NonFiniteError(RuntimeError):
    """`trainer.max_nonfinite_steps` steps in a row were skipped."""


@dataclass
class NonFiniteGuard:
    limit: int
    """`trainer.max_nonfinite_steps`."""
    streak: int = 0

    def check(self, done: int, record: dict[str, Any], announce: bool) -> None:
        """After step `done` (its metrics record): reset, or count and maybe stop."""
        if not record.get("update_skipped"):
            self.streak = 0
            return
        self.streak += 1
        tasks = sorted(k.split("/", 1)[1] for k, v in record.items()
                       if k.startswith("nonfinite/") and v)  # fmt: skip
        what = f"loss of {', '.join(tasks)}" if tasks else "gradients (every loss finite)"
        if announce:
            print(f"step {done}: non-finite {what}: update skipped on every rank "
                  f"({self.streak} in a row, limit {self.limit})", flush=True)  # fmt: skip
        if self.streak >= self.limit:
            raise NonFiniteError(
                f"stopping at step {done}: {self.streak} steps in a row with a non-finite {what} "
                f"(trainer.max_nonfinite_steps={self.limit}); the newest checkpoint predates them"
            )
