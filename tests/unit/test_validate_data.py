"""Data checks that run before any worker starts (DESIGN.md §5.7): splits, label spaces, streams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gppf_dist.engine.validate import validate_run
from tests.shard_roots import edited_root


def no_det_val(raw: dict[str, Any]) -> None:
    del raw["tasks"]["det"]["splits"]["val"], raw["tasks"]["det"]["offsets"]["val"]


def empty_pose_val(raw: dict[str, Any]) -> None:
    raw["tasks"]["pose"]["splits"]["val"] = []


def no_seg_classes(raw: dict[str, Any]) -> None:
    raw["tasks"]["seg"]["label_space"]["classes"] = []


def empty_first_shard(raw: dict[str, Any]) -> None:
    raw["tasks"]["face"]["splits"]["train"][0]["samples"] = 0


def first_shard_offsets_cut(offsets: list[list[int]]) -> None:
    """The offsets of a shard of no samples: where it (does not) start."""
    offsets[0] = offsets[0][:1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (no_det_val, r"task 'det' has no split 'val' in .*manifest.json \(splits: \['train'\]\)"),
        (empty_pose_val, r"task 'pose' has an empty split 'val'"),
        (no_seg_classes, r"label space of task 'seg': `tasks.seg.label_space.classes`=\[\]"),
        (empty_first_shard, r"task 'face' split 'train': canonical stream 0 .* empty shards"),
    ],
)
def test_bad_data_is_refused_naming_task_and_split(
    compose_run: Any,
    tiny_shards: Path,
    tmp_path: Path,
    edit: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    def cfg(root: Path) -> Any:
        return compose_run(f"data.root={root}", f"run.dir={tmp_path / 'run'}")

    validate_run(cfg(tiny_shards), 2)  # the corpus itself is fine
    offsets = {("face", "train"): first_shard_offsets_cut} if edit is empty_first_shard else None
    with pytest.raises(ValueError, match=message):
        validate_run(cfg(edited_root(tiny_shards, tmp_path / "edited", edit, offsets)), 2)


def test_a_task_left_out_needs_no_val_split(
    compose_run: Any, tiny_shards: Path, tmp_path: Path
) -> None:
    root = edited_root(tiny_shards, tmp_path / "edited", no_det_val)
    cfg = compose_run(f"data.root={root}", "simt.only=[cls_object,seg]")
    validate_run(cfg, 2)


def test_eval_batch_size_is_checked_before_the_run(compose_run: Any, tiny_shards: Path) -> None:
    cfg = compose_run(f"data.root={tiny_shards}", "trainer.eval_batch_size=0")
    with pytest.raises(ValueError, match=r"`trainer.eval_batch_size`=0 must be >= 1"):
        validate_run(cfg, 2)
