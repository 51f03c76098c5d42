"""Data checks that run before any worker starts (DESIGN.md §5.7): splits, label spaces, streams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gppf_dist.preflight.validate import validate_run
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


def test_the_launcher_and_the_worker_in_one_process_parse_the_manifest_once(
    compose_run: Any, tiny_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """launcher=none: the process validates as the launcher (checking the shard files), then
    as the worker; the manifest is parsed once. A rewritten manifest is read again."""
    import gppf_dist.data.format.manifest as manifest_mod

    parsed: list[str] = []
    real = manifest_mod.manifest_from_dict

    def counted(raw: Any, where: str = "", *args: Any, **kwargs: Any) -> Any:
        parsed.append(where)
        return real(raw, where, *args, **kwargs)

    monkeypatch.setattr(manifest_mod, "manifest_from_dict", counted)
    root = edited_root(tiny_shards, tmp_path / "root", lambda raw: None)
    cfg = compose_run(f"data.root={root}", f"run.dir={tmp_path / 'run'}")
    launcher = validate_run(cfg, 2, check_files=True)
    worker = validate_run(cfg, 2, check_files=False)
    assert worker is launcher and len(parsed) == 1
    assert sorted(worker.tasks) == sorted(cfg.simt.active_tasks())
    edited_root(tiny_shards, tmp_path / "again", lambda raw: None)
    (root / "manifest.json").write_bytes((tmp_path / "again/manifest.json").read_bytes())
    validate_run(cfg, 2, check_files=False)
    assert len(parsed) == 2
