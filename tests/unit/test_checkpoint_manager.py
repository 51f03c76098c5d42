"""Checkpoint bookkeeping: only complete checkpoints resume; LATEST is atomic; retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from gppf_dist.checkpoint.layout import tag_for_step
from gppf_dist.checkpoint.manager import (
    complete_tags,
    find_latest,
    mark_complete,
    prune,
    step_of_tag,
)


def make(ckpt: Path, step: int, complete: bool) -> str:
    tag = tag_for_step(step)
    (ckpt / tag).mkdir(parents=True)
    (ckpt / tag / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        mark_complete(ckpt, tag, {"step": step})
    return tag


def test_incomplete_checkpoint_is_ignored(tmp_path: Path) -> None:
    make(tmp_path, 10, complete=True)
    make(tmp_path, 20, complete=False)  # crashed mid-save
    assert find_latest(tmp_path) == tag_for_step(10)


def test_latest_pointer_and_scan_agree(tmp_path: Path) -> None:
    assert find_latest(tmp_path) is None
    make(tmp_path, 5, complete=True)
    make(tmp_path, 15, complete=True)
    assert (tmp_path / "LATEST").read_text().strip() == tag_for_step(15)
    (tmp_path / "LATEST").unlink()
    assert find_latest(tmp_path) == tag_for_step(15)


def test_prune_keeps_newest_and_drops_stale_partials(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        make(tmp_path, step, complete=True)
    make(tmp_path, 25, complete=False)
    removed = prune(tmp_path, keep=2)
    assert sorted(removed) == [tag_for_step(10), tag_for_step(25)]
    assert complete_tags(tmp_path) == [tag_for_step(20), tag_for_step(30)]


def test_bad_tag_names_the_key() -> None:
    with pytest.raises(ValueError, match="`resume`='last'"):
        step_of_tag("last")
