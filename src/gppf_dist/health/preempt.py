"""Preemption: a signal only sets a flag; all ranks agree at the next step boundary.

SIGUSR1 (Slurm's `--signal=B:USR1@120`, forwarded to the workers) and SIGTERM (sent by torchrun,
the elastic agent or `scancel`) are caught in every worker. The flag rides along with the step's
statistics all-reduce (no extra collective), so every rank sees the same decision after the
same step, writes the collective checkpoint and exits cleanly; the job script requeues.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class PreemptionFlag:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.received_at: float | None = None

    def install(self) -> PreemptionFlag:
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received_at is None:
            self.signal_name = signal.Signals(signum).name
            self.received_at = time.monotonic()

    @property
    def raised(self) -> bool:
        return self.received_at is not None
