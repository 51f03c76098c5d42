"""Which layouts a checkpoint resumes at: ZeRO 0 anywhere; ZeRO 1/2 only where DeepSpeed's
partitioned files hold the same parameters (same stage, EP on the same side of 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gppf_dist.checkpoint.manager import COMPLETE
from gppf_dist.checkpoint.topology import Topology, check_topology


def saved(tmp_path: Path, world: int, ep: int, zero: int) -> Path:
    tag = tmp_path / "step_00000003"
    tag.mkdir()
    marker = {"step": 3, "world_size": world, "ep_size": ep, "zero_stage": zero}
    (tag / COMPLETE).write_text(json.dumps(marker))
    return tag


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
    ],
)
def test_layouts_that_would_load_wrongly_are_refused_naming_the_key(
    tmp_path: Path, was: tuple[int, int, int], now: Topology, named: str
) -> None:
    tag = saved(tmp_path, *was)
    with pytest.raises(ValueError, match="cannot resume") as err:
        check_topology(tag, now)
    assert named in str(err.value) and str(tag) in str(err.value)


def test_markers_without_a_topology_are_accepted(tmp_path: Path) -> None:
    tag = tmp_path / "step_00000001"
    tag.mkdir()
    (tag / COMPLETE).write_text(json.dumps({"step": 1, "world_size": 2}))
    check_topology(tag, Topology(1, 1, 2))
