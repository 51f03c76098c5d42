"""Which layouts a checkpoint can resume at, from the topology its COMPLETE marker records.

ZeRO 0 checkpoints are topology-free (parameters and optimizer state by name and global lego
id): they resume at any world and EP size. ZeRO 1/2 checkpoints hold each rank's partition with
the names and offsets of what it holds (`zero_state.py`), and the expert-parallel legos whole
(`named_state.py`): they resume at any world and EP size of the same stage. Older ZeRO 1/2
checkpoints, with only DeepSpeed's per-rank optimizer files, resume only where they were saved.
A resume that cannot load is refused before any worker starts.
"""

from __future__ import annotations

from pathlib import Path

from gppf_dist.checkpoint.marker import ZERO_UNKNOWN, Topology, read_marker
from gppf_dist.checkpoint.zero_state import has_partitions

__all__ = ["Topology", "check_topology"]


def check_topology(tag_dir: Path, now: Topology) -> None:
    """Raise ValueError, naming the keys, if the checkpoint in `tag_dir` cannot resume at `now`."""
    marker = read_marker(tag_dir)
    was = marker.topology if marker is not None else None
    if was is None:
        return
    stage = "1 or 2" if was.zero_stage == ZERO_UNKNOWN else str(was.zero_stage)
    ep = "?" if was.ep_size == 0 else str(was.ep_size)
    where = (
        f"checkpoint {str(tag_dir)!r} was saved with `parallel.zero_stage`={stage}, "
        f"`parallel.ep_size`={ep} at world size {was.world_size}"
    )
    zero_then, zero_now = was.zero_stage != 0, now.zero_stage != 0
    if zero_then != zero_now or (was.zero_stage > 0 and was.zero_stage != now.zero_stage):
        raise ValueError(
            f"{where}; it cannot resume with `parallel.zero_stage`={now.zero_stage}: "
            f"use `parallel.zero_stage`={stage}"
        )
    if now.zero_stage == 0 or has_partitions(tag_dir):
        return
    if (was.ep_size > 1) != (now.ep_size > 1):
        raise ValueError(
            f"{where}; under ZeRO {now.zero_stage} it cannot resume with "
            f"`parallel.ep_size`={now.ep_size} (DeepSpeed partitions the legos' optimizer state "
            "only without expert parallelism). Resume at an ep_size on the same side of 1, or "
            "save with `parallel.zero_stage`=0 for checkpoints that resume at any EP size"
        )
    if was.world_size != now.world_size:
        raise ValueError(
            f"{where}; under ZeRO {now.zero_stage} it cannot resume at world size "
            f"{now.world_size} (DeepSpeed's optimizer partitions are per rank): set "
            f"`launcher.nproc` x `launcher.nnodes` (or the hostfile's slots) to {was.world_size}, "
            "or save with `parallel.zero_stage`=0 for checkpoints that resume at any world size"
        )
