"""Heartbeats: where each rank is (steps done, phase) and that its process still runs.

Two levels, so that a shared filesystem sees one writer per node, not one per rank:

- each rank's watchdog thread (`health/watchdog.py`) replaces its own small JSON file in a
  node-local folder (`local_directory`: tmpfs where there is one), at most once a second;
- one rank per node, the lowest whose own beat is fresh, then publishes every beat of that
  folder as one file `<run.dir>/heartbeat/node_<host>.json` (`publish_node`, under a node-local
  lock, so a later publication never drops an earlier beat). A stopped rank stops beating, not
  its node: the next rank up publishes its stale beat, and the rank is named.

The watchdog of a waiting rank (one per node scans: `scanner`) and the local launcher read the
beats (`read_beats`: node files, per-rank files, and this node's local folder, the newest beat of
each rank winning) to name a rank that stopped answering or died. Files, not the rendezvous
store: the run directory is already shared by every node (checkpoints), and it survives the
process group and the process.

Times are wall-clock seconds (`time.time()`), since they are compared across processes and nodes
(cluster clocks agree to well under the seconds these checks use).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

HEARTBEAT_DIR = "heartbeat"
LOCAL_ENV = "GPPF_LOCAL_HEARTBEAT_DIR"
"""Where the node-local folders go (default: /dev/shm where writable, else the temp folder)."""
FRESH_S = 3.0
"""A beat at most this old comes from a live watchdog thread (they beat at least once a
second): its rank may publish its node's beats and scan."""

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


def node_path(directory: Path, host: str) -> Path:
    return directory / f"node_{re.sub(r'[^A-Za-z0-9._-]', '_', host)}.json"


def local_directory(shared: Path) -> Path:
    """This node's folder for the per-rank beats of the run whose heartbeat folder is `shared`
    (the same on every rank of the node, another for another run)."""
    base = os.environ.get(LOCAL_ENV)
    if not base:
        shm = Path("/dev/shm")
        base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()
    key = hashlib.sha256(os.path.abspath(shared).encode()).hexdigest()[:16]
    return Path(base) / f"gppf-beats-{key}"


def _rank_files(directory: Path) -> list[Beat]:
    out = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith("rank_") and entry.name.endswith(".json"):
                with contextlib.suppress(OSError):
                    beat = decode(Path(entry.path).read_text())
                    if beat is not None:
                        out.append(beat)
    return out


def _node_files(directory: Path) -> list[Beat]:
    out = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith("node_") and entry.name.endswith(".json"):
                with contextlib.suppress(OSError, ValueError):
                    listed = json.loads(Path(entry.path).read_text())
                    beats = (decode(json.dumps(b)) for b in listed.get("beats", []))
                    out.extend(b for b in beats if b is not None)
    return out


def publish_node(local: Path, shared: Path, host: str, attempt: str) -> None:
    """Every beat of `attempt` in the node-local folder `local`, as this node's one file in
    `shared`. Under the folder's lock: each publisher reads after the previous one wrote."""
    with open(local / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        beats = sorted((b for b in _rank_files(local) if b.attempt == attempt),
                       key=lambda b: b.rank)  # fmt: skip
        if not beats:  # the node's folder was retired meanwhile: its file stays as it is
            return
        path = node_path(shared, host)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"beats": [asdict(b) for b in beats]}))
        os.replace(tmp, path)


def retire_node(local: Path, attempt: str) -> None:
    """Once every beat of `attempt` in the node-local folder says "finished" (a clean end; the
    node's file in the shared folder keeps them): remove them, and the folder when empty."""
    with contextlib.suppress(OSError), open(local / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mine = [b for b in _rank_files(local) if b.attempt == attempt]
        if not mine or any(b.kind != "finished" for b in mine):
            return
        for b in mine:
            beat_path(local, b.rank).unlink(missing_ok=True)
        if not any(p.name != ".lock" for p in local.iterdir()):
            (local / ".lock").unlink(missing_ok=True)
            local.rmdir()


def local_beats(local: Path, attempt: str) -> list[Beat]:
    """This node's beats of `attempt` (its ranks' own files)."""
    return [b for b in _rank_files(local) if b.attempt == attempt]


def publisher(beats: list[Beat], now: float) -> int | None:
    """The rank that publishes a node's beats: the lowest whose beat is fresh."""
    return min((b.rank for b in beats if now - b.at <= FRESH_S), default=None)


def read_beat(directory: Path, rank: int) -> Beat | None:
    return read_beats(directory, rank + 1).get(rank)


def read_beats(directory: Path, world_size: int) -> dict[int, Beat]:
    """rank -> its newest beat, for the ranks of a world of `world_size` that have a readable
    one: from the node files and per-rank files in `directory`, and this node's local folder
    (fresher for its own ranks). One listing of each folder, whatever the world size."""
    found: dict[int, Beat] = {}
    sources = (_node_files(directory), _rank_files(directory),
               _rank_files(local_directory(directory)))  # fmt: skip
    for beats in sources:
        for beat in beats:
            if 0 <= beat.rank < world_size:
                known = found.get(beat.rank)
                if known is None or beat.at > known.at:
                    found[beat.rank] = beat
    return found


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
