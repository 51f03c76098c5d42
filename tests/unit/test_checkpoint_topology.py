"""Which layouts a checkpoint resumes at: ZeRO 0 anywhere; ZeRO 1/2 at any world and EP size of
the same stage when it holds our named partitions (`zero_state.py`), else (older checkpoints,
DeepSpeed's per-rank files only) only where those hold the same parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gppf_dist.checkpoint.layout import COMPLETE
from gppf_dist.checkpoint.topology import Topology, check_topology
from gppf_dist.checkpoint.zero_state import partition_file


def saved(tmp_path: Path, world: int, ep: int, zero: int, partitions: bool = False) -> Path:
    tag = tmp_path / "step_00000003"
    (tag / "gppf").mkdir(parents=True)
    marker = {"step": 3, "world_size": world, "ep_size": ep, "zero_stage": zero}
    (tag / COMPLETE).write_text(json.dumps(marker))
    if partitions:
        for rank in range(world):
            (tag / "gppf" / partition_file(rank)).write_bytes(b"")
    return tag


@pytest.mark.parametrize(
    ("was", "now"),
    [
        ((2, 1, 2), Topology(1, 1, 2)),  # shrink
        ((2, 1, 1), Topology(4, 1, 1)),  # grow
        ((2, 2, 2), Topology(1, 1, 2)),  # EP 2 -> 1, legos from their whole files
        ((1, 1, 1), Topology(2, 2, 1)),  # EP 1 -> 2
    ],
)
def test_named_zero_partitions_resume_at_any_world_and_ep_size(
    tmp_path: Path, was: tuple[int, int, int], now: Topology
) -> None:
    check_topology(saved(tmp_path, *was, partitions=True), now)


def test_named_zero_partitions_keep_their_stage(tmp_path: Path) -> None:
    tag = saved(tmp_path, 2, 1, 2, partitions=True)
    for stage in (0, 1):
        with pytest.raises(ValueError, match="use `parallel.zero_stage`=2"):
            check_topology(tag, Topology(2, 1, stage))


@pytest.mark.parametrize(
    ("was", "now"),
    [
        ((2, 2, 0), Topology(1, 1, 0)),  # ZeRO 0: any world and EP size
        ((2, 1, 0), Topology(4, 4, 0)),
        ((2, 2, 1), Topology(2, 2, 1)),  # same layout
        ((4, 2, 2), Topology(4, 4, 2)),  # legos stay out of DeepSpeed's files at either EP size
    ],
)
def test_resumable_layouts_pass(tmp_path: Path, was: tuple[int, int, int], now: Topology) -> None:
    check_topology(saved(tmp_path, *was), now)


@pytest.mark.parametrize(
    ("was", "now", "named"),
    [
        ((2, 1, 0), Topology(2, 1, 1), "`parallel.zero_stage`=1"),
        ((2, 2, 2), Topology(2, 2, 0), "`parallel.zero_stage`=0"),
        ((2, 2, 1), Topology(2, 1, 1), "`parallel.ep_size`=1"),
        ((2, 1, 2), Topology(2, 2, 2), "`parallel.ep_size`=2"),
        ((2, 2, 1), Topology(4, 2, 1), "to 2"),  # DeepSpeed's partitions are per rank
        ((4, 1, 2), Topology(2, 1, 2), "to 4"),
    ],
)
def test_layouts_that_would_load_wrongly_are_refused_naming_the_key(
    tmp_path: Path, was: tuple[int, int, int], now: Topology, named: str
) -> None:
    tag = saved(tmp_path, *was)
    with pytest.raises(ValueError, match="cannot resume") as err:
        check_topology(tag, now)
    assert named in str(err.value) and str(tag) in str(err.value)


def old_marker(tmp_path: Path, zero0: bool) -> Path:
    """A marker written before the layout was recorded: the world size only."""
    tag = tmp_path / "step_00000001"
    (tag / "gppf").mkdir(parents=True)
    if zero0:
        (tag / "gppf" / "shared.pt").write_bytes(b"")
    (tag / COMPLETE).write_text(json.dumps({"step": 1, "world_size": 2}))
    return tag


def test_old_markers_get_their_stage_from_the_files(tmp_path: Path) -> None:
    zero0 = old_marker(tmp_path / "a", zero0=True)
    check_topology(zero0, Topology(1, 2, 0))
    with pytest.raises(ValueError, match="`parallel.zero_stage`=0"):
        check_topology(zero0, Topology(2, 1, 1))
    zero12 = old_marker(tmp_path / "b", zero0=False)
    check_topology(zero12, Topology(2, 1, 2))
    with pytest.raises(ValueError, match="use `parallel.zero_stage`=1 or 2"):
        check_topology(zero12, Topology(2, 1, 0))
    with pytest.raises(ValueError, match="`parallel.ep_size`=2"):
        check_topology(zero12, Topology(2, 2, 1))
