"""MSMT17_V1's list files and PA-100K's test partition, each built tiny in the released format
(JPEG files under `train/`/`test/` with `list_*.txt`; a real `annotation.mat`), convert into
shards that verify."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.convert.readers import LAYOUTS
from gppf_dist.data.format.manifest import load_manifest


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (24, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def _convert(layout: str, src: Path, out: Path, split: str) -> int:
    args = ["convert", layout, "--src", str(src), "--out", str(out), "--split", split]
    return shards_main([*args, "--quiet", "--samples-per-shard", "3"])


def _annotations(root: Path, task: str, split: str) -> list[dict]:
    out = []
    for shard in load_manifest(root).task(task).splits[split]:
        with tarfile.open(root / shard.path) as tar:
            out += [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]  # type: ignore[union-attr]
    return out


def _verified(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert shards_main(["verify", str(root)]) == 0, capsys.readouterr().err
    assert "OK: 0 problem(s)" in capsys.readouterr().out


# --- MSMT17_V1 --------------------------------------------------------------------------------

MSMT_LISTED = {  # list file -> (image folder, [(relative path, identity)])
    "list_train.txt": ("train", [
        ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
        ("0000/0000_001_05_0303morning_0036_1.jpg", 0),
        ("0005/0005_000_12_0303noon_0978_0.jpg", 5),
        ("0005/0005_bad.jpg", 5),  # no camera field: skipped (bad_name)
    ]),
    "list_val.txt": ("train", [
        ("0001/0001_002_03_0303afternoon_1202_2.jpg", 1),
        ("0005/0005_003_15_0303noon_1001_0.jpg", 5),
    ]),
    "list_query.txt": ("test", [
        ("0000/0000_000_02_0113morning_0011_0.jpg", 0),
        ("0002/0002_004_07_0113noon_0712_1.jpg", 2),
    ]),
    "list_gallery.txt": ("test", [
        ("0000/0000_001_09_0113morning_0091_1.jpg", 0),
        ("0002/0002_000_07_0113noon_0700_0.jpg", 2),
        ("0002/0002_001_11_0113noon_0800_0.jpg", 2),  # listed, never written: missing_image
    ]),
}  # fmt: skip


def _msmt_tree(root: Path) -> None:
    for k, (list_name, (folder, rows)) in enumerate(MSMT_LISTED.items()):
        for j, (rel, _) in enumerate(rows):
            if not rel.endswith("0800_0.jpg"):
                _jpeg(root / folder / rel, 10 * k + j)
        lines = "".join(f"{rel} {identity}\n" for rel, identity in rows)
        (root / list_name).write_text(lines)


def test_msmt17_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data" / "MSMT17_V1"
    _msmt_tree(root)
    out = tmp_path / "out"
    assert _convert("msmt17", tmp_path / "data", out, "train") == 0  # the parent of the release
    assert "5 samples" in (log := capsys.readouterr().out) and "{'bad_name': 1}" in log
    assert _convert("msmt17", root, out, "val") == 0  # the release folder itself
    assert "4 samples" in (log := capsys.readouterr().out) and "{'missing_image': 1}" in log
    tm = load_manifest(out).task("reid")
    assert (tm.type, tm.dataset) == ("reid", "msmt17")
    assert tm.label_space == {"num_identities": 3, "identities": [0, 1, 5]}
    train = sorted((a["identity"], a["camera"]) for a in _annotations(out, "reid", "train"))
    assert train == [(0, 1), (0, 5), (1, 3), (2, 12), (2, 15)]  # 0, 1, 5 -> 0, 1, 2
    val = sorted((a["identity"], a["camera"]) for a in _annotations(out, "reid", "val"))
    assert val == [(0, 2), (0, 9), (2, 7), (2, 7)]  # original test ids; 0 is a person here
    _verified(out, capsys)


def test_msmt17_damaged_list_is_named(tmp_path: Path) -> None:
    root = tmp_path / "MSMT17_V1"
    _msmt_tree(root)
    good = (root / "list_val.txt").read_text()
    (root / "list_val.txt").write_text(good + "0001/0001_002_03_0303afternoon_1202_2.jpg one\n")
    with pytest.raises(ValueError, match=r"list_val.txt:3: expected `<image path> <identity>`"):
        LAYOUTS["msmt17"][0](root, None, "train")
    (root / "list_val.txt").write_text(good)
    (root / "list_query.txt").unlink()
    with pytest.raises(ValueError, match=r"list_query.txt does not exist"):
        LAYOUTS["msmt17"][0](root, None, "val")


# --- PA-100K: train and test partitions -------------------------------------------------------


def _cells(values: list[str]) -> np.ndarray:
    """A MATLAB Nx1 cell array of strings, as scipy writes and reads them."""
    out = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        out[i, 0] = v
    return out


PA100K_LABELS = {  # partition -> (first image number, 0/1 rows), each partition's rows its own
    "train": (1, [[1, 0, 0], [0, 1, 0], [1, 1, 0]]),
    "val": (80001, [[0, 0, 0], [0, 0, 0]]),
    "test": (90001, [[1, 1, 1], [0, 0, 1], [1, 0, 1]]),
}


def _pa100k(src: Path, parts: tuple[str, ...] = ("train", "val", "test")) -> list[str]:
    attrs = ["Female", "AgeOver60", "Hat"]
    mat: dict[str, object] = {"attributes": _cells(attrs)}
    for part in parts:
        first, rows = PA100K_LABELS[part]
        names = [f"{first + i:06d}.jpg" for i in range(len(rows))]
        for i, name in enumerate(names):
            _jpeg(src / "release_data" / "release_data" / name, first + i)
        mat[f"{part}_images_name"] = _cells(names)
        mat[f"{part}_label"] = np.array(rows, dtype=np.uint8)
    scipy.io.savemat(src / "annotation.mat", mat)
    return attrs


def test_pa100k_val_is_the_test_partition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "PA-100K", tmp_path / "out"
    attrs = _pa100k(src)
    assert _convert("pa100k", src, out, "train") == 0
    assert _convert("pa100k", src / "annotation.mat", out, "val") == 0
    tm = load_manifest(out).task("attr")
    assert tm.label_space == {"attributes": attrs}
    assert (tm.num_samples("train"), tm.num_samples("val")) == (3, 3)  # val part: 2 images
    train = sorted(a["attributes"] for a in _annotations(out, "attr", "train"))
    assert train == sorted(PA100K_LABELS["train"][1])
    val = sorted(a["attributes"] for a in _annotations(out, "attr", "val"))
    assert val == sorted(PA100K_LABELS["test"][1])  # not the val partition's all-zero rows
    _verified(out, capsys)


def test_pa100k_without_test_partition_is_named(tmp_path: Path) -> None:
    src = tmp_path / "PA-100K"
    _pa100k(src, parts=("train", "val"))
    assert len(LAYOUTS["pa100k"][0](src, None, "train").items) == 3
    with pytest.raises(ValueError, match=r"annotation.mat has no `test_images_name`"):
        LAYOUTS["pa100k"][0](src, None, "val")
    with pytest.raises(ValueError, match=r"split 'test' is not one of \['train', 'val'\]"):
        LAYOUTS["pa100k"][0](src, None, "test")
