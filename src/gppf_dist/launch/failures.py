"""What the local launcher says about workers that failed: for each, how it ended (exit status
or signal, e.g. SIGKILL from the OOM killer) and where its last heartbeat placed it (step and
phase, `health/heartbeat.py`), since a killed process cannot say so itself."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from gppf_dist.health.heartbeat import HEARTBEAT_DIR, read_beat
from gppf_dist.health.stall import exit_line


def describe_failures(run_dir: Path, run_id: str, failures: Mapping[int, ProcessFailure]) -> str:
    """One line per failed rank; beats of other runs in the same directory are not used."""
    lines = []
    for rank, failure in sorted(failures.items()):
        beat = read_beat(run_dir / HEARTBEAT_DIR, rank)
        if beat is not None and beat.attempt.split("/")[0] != run_id:
            beat = None
        lines.append(exit_line(rank, failure.exitcode, failure.signal_name(), beat))
    return "\n".join(lines)
