"""The COMPLETE marker: written last into a checkpoint, it says the checkpoint is whole and
records the step, the layout it was saved at, the measured cost table and every file of the
checkpoint with its size and SHA-256 (`digest.py`), so that resume and `gppf-ckpt verify` can
prove the checkpoint is still what was written (DESIGN.md §5.8).

`read_marker` is the one reader of the marker's JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gppf_dist.checkpoint.digest import CHECKSUM, FileRecord
from gppf_dist.checkpoint.layout import COMPLETE, NAMED_DIR, SHARED_FILE

ZERO_UNKNOWN = -1
"""An old ZeRO 1/2 checkpoint whose stage was not recorded."""


@dataclass(frozen=True)
class Topology:
    """How a run is laid out (recorded in each checkpoint's COMPLETE marker)."""

    world_size: int
    ep_size: int
    zero_stage: int


@dataclass(frozen=True)
class Marker:
    step: int
    topology: Topology | None
    """None for markers written before the world size was recorded."""
    costs: dict[str, Any] | None = None
    """The measured cost table (`simt/costs.py` state), for re-planning and lego placement."""
    files: dict[str, FileRecord] | None = None
    """Relative path -> size and checksum of every file; None in markers written before files
    were recorded (such checkpoints cannot be verified)."""

    def to_json(self) -> dict[str, Any]:
        layout = asdict(self.topology) if self.topology is not None else {}
        saved: dict[str, Any] = {"step": self.step, **layout, "costs": self.costs}
        if self.files is not None:
            saved["files"] = {name: asdict(rec) for name, rec in self.files.items()}
        return saved


def read_marker(tag_dir: Path) -> Marker | None:
    """The marker of the checkpoint in `tag_dir`, or None if it has none (incomplete).

    Markers written before the layout was recorded hold the world size only: their ZeRO stage
    shows in the files (ZeRO 0 always wrote `gppf/shared.pt`; ZeRO 1/2 then ran without expert
    parallelism, recorded here as ep_size 1 with stage ZERO_UNKNOWN)."""
    path = tag_dir / COMPLETE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint marker {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint marker {str(path)!r} is not a JSON object")
    topology = None
    if "world_size" in saved:
        world = int(saved["world_size"])
        if "zero_stage" in saved:
            topology = Topology(world, int(saved["ep_size"]), int(saved["zero_stage"]))
        elif (tag_dir / NAMED_DIR / SHARED_FILE).is_file():
            topology = Topology(world, 0, 0)
        else:
            topology = Topology(world, 1, ZERO_UNKNOWN)
    files = _files(path, saved["files"]) if "files" in saved else None
    return Marker(int(saved.get("step", 0)), topology, saved.get("costs"), files)


def _files(path: Path, listed: Any) -> dict[str, FileRecord]:
    try:
        return {str(name): FileRecord(int(rec["size"]), str(rec[CHECKSUM]))
                for name, rec in listed.items()}  # fmt: skip
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(
            f"checkpoint marker {str(path)!r}: `files` is not a map of path -> {{size, {CHECKSUM}}}"
        ) from None
