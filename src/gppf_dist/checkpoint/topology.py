"""Which layouts a checkpoint can resume at, from the topology its COMPLETE marker records.

ZeRO 0 checkpoints are topology-free (parameters and optimizer state by name and global lego
id): they resume at any world and EP size. Under ZeRO 1/2 DeepSpeed's partitioned files hold the
optimizer state of the parameters its optimizer holds: all of them at `ep_size` 1, all but the
expert-parallel legos above (those are saved by name, `engine/named_state.py`). A resume that
would load such files into another stage or another split is refused before any worker starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gppf_dist.checkpoint.manager import COMPLETE


@dataclass(frozen=True)
class Topology:
    """How a run is laid out (recorded in each checkpoint's COMPLETE marker)."""

    world_size: int
    ep_size: int
    zero_stage: int


def check_topology(tag_dir: Path, now: Topology) -> None:
    """Raise ValueError, naming the keys, if the checkpoint in `tag_dir` cannot resume at `now`."""
    marker = tag_dir / COMPLETE
    saved = json.loads(marker.read_text()) if marker.is_file() else {}
    if "zero_stage" not in saved:  # written before the topology was recorded
        return
    was = Topology(int(saved["world_size"]), int(saved["ep_size"]), int(saved["zero_stage"]))
    where = (
        f"checkpoint {str(tag_dir)!r} was saved with `parallel.zero_stage`={was.zero_stage}, "
        f"`parallel.ep_size`={was.ep_size} at world size {was.world_size}"
    )
    if was.zero_stage != now.zero_stage:
        raise ValueError(
            f"{where}; it cannot resume with `parallel.zero_stage`={now.zero_stage}: "
            f"use `parallel.zero_stage`={was.zero_stage}"
        )
    if now.zero_stage > 0 and (was.ep_size > 1) != (now.ep_size > 1):
        raise ValueError(
            f"{where}; under ZeRO {now.zero_stage} it cannot resume with "
            f"`parallel.ep_size`={now.ep_size} (DeepSpeed partitions the legos' optimizer state "
            "only without expert parallelism). Resume at an ep_size on the same side of 1, or "
            "save with `parallel.zero_stage`=0 for checkpoints that resume at any EP size"
        )
