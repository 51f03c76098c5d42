"""`gppf-shards synth-downstream`: the VTAB-like suite for transfer, distinct from pre-training."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.format.manifest import load_manifest
from gppf_dist.data.synth.corpus import SYNTH_TASKS
from gppf_dist.data.synth.downstream import (
    DOWNSTREAM_TASKS,
    generate_downstream,
    write_downstream_suite,
)

SHARDS = str(Path(sys.executable).parent / "gppf-shards")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite at the command's defaults (1,000 train, 500 test per task, seed 0)."""
    root = tmp_path_factory.mktemp("downstream")
    assert shards_main(["synth-downstream", "--out", str(root)]) == 0
    return root


def _labels(root: Path, rel_path: str) -> list[int]:
    with tarfile.open(root / rel_path) as tar:
        names = [m for m in tar.getmembers() if m.name.endswith(".cls")]
        return [int(tar.extractfile(m).read()) for m in names]  # type: ignore[union-attr]


def test_manifest_has_the_tasks_and_counts(suite: Path) -> None:
    manifest = load_manifest(suite)
    names = set(manifest.tasks)
    assert len(names) >= 4 and names == {t.name for t in DOWNSTREAM_TASKS}
    assert not names & {t.name for t in SYNTH_TASKS}
    for tm in manifest.tasks.values():
        assert tm.type == "classification"
        assert list(tm.label_space) == ["classes"] and len(tm.label_space["classes"]) >= 4
        assert tm.num_samples("train") == 1000 and tm.num_samples("val") == 500
        assert all(s.has_offsets for shards in tm.splits.values() for s in shards)


def test_images_are_small_jpegs(suite: Path) -> None:
    tm = load_manifest(suite).tasks["count"]
    with tarfile.open(suite / tm.splits["val"][0].path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
        img = Image.open(io.BytesIO(tar.extractfile(member).read()))  # type: ignore[union-attr]
    assert img.format == "JPEG" and img.size == (64, 64)


def test_verify_passes(suite: Path) -> None:
    proc = subprocess.run([SHARDS, "verify", str(suite)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK: 0 problem(s)" in proc.stdout


def test_every_shard_is_class_balanced_and_shuffled(suite: Path) -> None:
    manifest = load_manifest(suite)
    for name, tm in manifest.tasks.items():
        num = len(tm.label_space["classes"])
        for split, shards in tm.splits.items():
            total: Counter[int] = Counter()
            for shard in shards:
                labels = _labels(suite, shard.path)
                total.update(labels)
                if shard.samples % num == 0:
                    counts = Counter(labels)
                    assert set(counts) == set(range(num)), (name, shard.path)
                    assert len(set(counts.values())) == 1, (name, shard.path, counts)
            assert max(total.values()) - min(total.values()) <= 1, (name, split, total)
            first = _labels(suite, shards[0].path)
            assert first != sorted(first) and first != [i % num for i in range(len(first))]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def tars(root: Path, seed: int) -> dict[str, bytes]:
        write_downstream_suite(
            root, train_per_task=24, test_per_task=12, seed=seed, samples_per_shard=12
        )
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tar"))}

    a, b, c = tars(tmp_path / "a", 3), tars(tmp_path / "b", 3), tars(tmp_path / "c", 4)
    assert len(a) >= 2 * len(DOWNSTREAM_TASKS) and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_a_sample_regenerates_on_its_own(suite: Path) -> None:
    task = next(t for t in DOWNSTREAM_TASKS if t.name == "grid_pos")
    shard = load_manifest(suite).tasks["grid_pos"].splits["train"][1]
    index = shard.samples + 5  # the 6th sample of the second shard
    with tarfile.open(suite / shard.path) as tar:
        stored = tar.extractfile(f"grid_pos_train_{index:07d}.jpg").read()  # type: ignore[union-attr]
    assert generate_downstream(task, "train", index, seed=0)["jpg"] == stored


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ["count", "cls_object"]}, r"unknown downstream task\(s\) \['cls_object'\]"),
        ({"test_per_task": -1}, "test_per_task must be >= 0"),
        ({"samples_per_shard": 0}, "samples_per_shard must be >= 1"),
    ],
)
def test_bad_arguments_name_the_key(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_downstream_suite(tmp_path, **kwargs)
