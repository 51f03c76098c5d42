"""The COMPLETE marker: written last into a checkpoint, it says the checkpoint is whole and
records the step, the layout it was saved at and the measured cost table.

`read_marker` is the one reader of the marker's JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

COMPLETE = "COMPLETE"
NAMED_DIR = "gppf"
"""The topology-free files' folder inside a checkpoint (`named_state.py`)."""
SHARED_FILE = "shared.pt"

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

    def to_json(self) -> dict[str, Any]:
        layout = asdict(self.topology) if self.topology is not None else {}
        return {"step": self.step, **layout, "costs": self.costs}


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
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint marker {str(path)!r} is not valid JSON: {err}") from None
    topology = None
    if "world_size" in saved:
        world = int(saved["world_size"])
        if "zero_stage" in saved:
            topology = Topology(world, int(saved["ep_size"]), int(saved["zero_stage"]))
        elif (tag_dir / NAMED_DIR / SHARED_FILE).is_file():
            topology = Topology(world, 0, 0)
        else:
            topology = Topology(world, 1, ZERO_UNKNOWN)
    return Marker(int(saved.get("step", 0)), topology, saved.get("costs"))
