"""`gppf-shards verify DIR`: a clean root passes; each kind of damage is reported by shard+key."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.synth.corpus import write_synthetic_corpus


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    write_synthetic_corpus(
        root,
        samples_per_task=16,
        val_per_task=4,
        seed=0,
        samples_per_shard=8,
        tasks=["det", "seg", "pose", "cls_object"],
    )
    return root


def _rewrite(path: Path, edit: dict[str, bytes]) -> None:
    """Replace the bytes of the named members, keeping everything else."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            data = edit.get(name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _first(path: Path, ext: str) -> tuple[str, bytes]:
    with tarfile.open(path) as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith(ext))
        return m.name, tar.extractfile(m).read()  # type: ignore[union-attr]


def test_clean_root_passes(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert shards_main(["verify", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 problem(s)" in out and "det" in out and "segmentation" in out
    assert shards_main(["verify", "--root", str(clean)]) == 0  # the old spelling still works


def test_every_problem_is_reported(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    shutil.copytree(clean, root)
    det = root / "det/train/synth-000000.tar"
    name, data = _first(det, ".json")
    ann = json.loads(data)
    ann["boxes"][0] = [0, 0, 500, 40]
    _rewrite(det, {name: json.dumps(ann).encode()})  # out of bounds; size and sha change
    pose = root / "pose/train/synth-000001.tar"
    name_p, data_p = _first(pose, ".json")
    ann_p = json.loads(data_p)
    ann_p["keypoints"] = "nose"
    jpg, _ = _first(pose, ".jpg")
    _rewrite(pose, {name_p: json.dumps(ann_p).encode(), jpg: b"\xff\xd8 broken"})
    (root / "seg/val/synth-000000.tar").unlink()
    cls = root / "cls_object/train/synth-000000.tar"
    cls.write_bytes(cls.read_bytes()[:5000])
    assert shards_main(["verify", str(root)]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    key = name.split(".")[0]
    assert f"PROBLEM det/train/synth-000000.tar key={key}: annotation" in out
    assert "boxes[0]" in out and "sha256" in out and "bytes, manifest says" in out
    assert f"key={name_p.split('.')[0]}: decode" in out  # image fails before the schema check
    assert "seg/val/synth-000000.tar key=-: file" in out and "does not exist" in out
    assert "cls_object/train/synth-000000.tar key=-: truncated_shard" in out
    assert "samples, manifest says 8" in out
    assert "FAILED" in out


def test_wrong_schema_is_named(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    shutil.copytree(clean, root)
    pose = root / "pose/train/synth-000000.tar"
    name, data = _first(pose, ".json")
    ann = json.loads(data)
    del ann["box"]
    _rewrite(pose, {name: json.dumps(ann).encode()})
    assert shards_main(["verify", str(root)]) == 1
    assert "`box`=None must be [x1, y1, x2, y2] numbers" in capsys.readouterr().err
