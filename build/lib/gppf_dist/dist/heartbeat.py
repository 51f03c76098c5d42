"""Heartbeats: where each rank is (steps done, phase) and that its process still runs.

One small JSON file per rank under `<run.dir>/heartbeat/`, replaced atomically by the rank's
watchdog thread (`engine/watchdog.py`) when its phase changes and at least every few seconds
while the process runs. The watchdog of a waiting rank and the local launcher read them to name
a rank that stopped answering or died. A file, not the rendezvous store: the run directory is
already shared by every node (checkpoints), and it survives the process group and the process.

Times are wall-clock seconds (`time.time()`), since they are compared across processes and nodes
(cluster clocks agree to well under the seconds these checks use).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

HEARTBEAT_DIR = "heartbeat"

ORDER = {
    "logging": 0,
    "checkpoint save": 1,
    "start-up": 1,
    "evaluation": 2,
    "start of step": 3,
    "forward": 4,
    "gradient all-reduce": 5,
    "finished": 6,
}
"""Phase kinds in the order a rank passes them while its count of completed steps stays the
same: right after a step it logs the step's record and checkpoints; evaluation runs before
training and after the last step; then come the next step's phases. (steps done, order) only
grows on one rank, so it compares the progress of two ranks (`Beat.progress`). Start-up and a
checkpoint save never meet at one count within an attempt."""
STEP_KINDS = frozenset({"start of step", "forward", "gradient all-reduce"})
"""Phases inside a step: shown as "step <done + 1>"; the others as "after step <done>"."""


@dataclass(frozen=True)
class Beat:
    """One rank's last published state."""

    rank: int
    pid: int
    host: str
    attempt: str
    """The same on every rank of one attempt of one run (`attempt_token`); a file with another
    token is left over from an earlier attempt."""
    done: int
    """Steps this rank had completed when the phase began."""
    kind: str
    task: str
    since: float
    """When the phase began."""
    at: float
    """When this beat was written."""

    @property
    def progress(self) -> tuple[int, int]:
        return self.done, ORDER[self.kind]

    @property
    def phase(self) -> str:
        return f"{self.kind} of {self.task}" if self.task else self.kind

    def where(self) -> str:
        """The step and phase, as a user reads them: "step 7, forward of det"."""
        if self.kind in STEP_KINDS:
            return f"step {self.done + 1}, {self.phase}"
        if self.kind == "start-up":
            return "start-up"
        return f"{self.phase} after step {self.done}" if self.done else f"{self.phase}, step 0"


def encode(beat: Beat) -> str:
    return json.dumps(asdict(beat), separators=(",", ":"))


def decode(text: str) -> Beat | None:
    """The beat in `text`, or None if it is not one (a torn or foreign file)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != {f.name for f in fields(Beat)}:
        return None
    beat = Beat(**data)
    numbers = ("rank", "pid", "done", "since", "at")
    numeric_ok = all(isinstance(getattr(beat, k), (int, float)) for k in numbers)
    texts_ok = all(isinstance(getattr(beat, k), str) for k in ("host", "attempt", "kind", "task"))
    if not (numeric_ok and texts_ok) or beat.kind not in ORDER:
        return None
    return beat


def beat_path(directory: Path, rank: int) -> Path:
    return directory / f"rank_{rank:05d}.json"


def write_beat(directory: Path, beat: Beat) -> None:
    """Replace the rank's file atomically: a reader sees the old beat or the new one."""
    path = beat_path(directory, beat.rank)
    tmp = path.with_name(f".{path.name}.{beat.pid}.tmp")
    tmp.write_text(encode(beat))
    os.replace(tmp, path)


def read_beat(directory: Path, rank: int) -> Beat | None:
    try:
        return decode(beat_path(directory, rank).read_text())
    except OSError:
        return None


def read_beats(directory: Path, world_size: int) -> dict[int, Beat]:
    """rank -> its beat, for the ranks of a world of `world_size` that have a readable one."""
    beats = {r: read_beat(directory, r) for r in range(world_size)}
    return {r: b for r, b in beats.items() if b is not None}


def attempt_token(env: Mapping[str, str]) -> str:
    """What every rank of one attempt shares: the elastic run id and restart count (local
    launcher, torchrun), else Slurm's job, step and restart count, else the rendezvous address.
    The local launcher finds its run's beats by the part before the "/"."""
    if "TORCHELASTIC_RUN_ID" in env:
        return f"{env['TORCHELASTIC_RUN_ID']}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if "SLURM_JOB_ID" in env:
        step = env.get("SLURM_STEP_ID", "")
        return f"slurm-{env['SLURM_JOB_ID']}.{step}/{env.get('SLURM_RESTART_COUNT', '0')}"
    return f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}/0"


def process_state(pid: int, host: str) -> str | None:
    """ "exited", "stopped" or "running" for a process on this machine; None for one on another
    host (or where /proc cannot tell)."""
    if host != socket.gethostname():
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "exited"
    except OSError:
        return None
    state = stat.rpartition(")")[2].split()[:1]
    if not state:
        return None
    if state[0] in ("Z", "X", "x"):
        return "exited"
    return "stopped" if state[0] in ("T", "t") else "running"
