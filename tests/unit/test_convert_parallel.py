"""`gppf-shards convert` at scale: a class-sorted source comes out mixed in every shard, any
number of worker processes writes the same bytes, a rerun keeps finished shards, and source
items that turn out bad are skipped and counted without renaming the others."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.format.manifest import Manifest, TaskManifest, load_manifest, save_manifest
from gppf_dist.data.format.writer import ShardWriter

CLASSES, PER_CLASS = 10, 30


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet-style folders, 10 classes x 30 small real JPEGs (listed class by class)."""
    src = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        (src / f"class{c:02d}").mkdir()
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / f"class{c:02d}" / f"img{i:03d}.jpg", quality=90)
    return src


def _convert(src: Path, out: Path, *extra: str) -> int:
    args = ["convert", "imagefolder", "--src", str(src), "--out", str(out), "--quiet"]
    return shards_main([*args, "--samples-per-shard", "100", *extra])


def _labels(root: Path) -> list[list[int]]:
    """The class ids of each train shard, in shard order."""
    out = []
    for shard in load_manifest(root).task("cls").splits["train"]:
        with tarfile.open(root / shard.path) as tar:
            out.append([int(tar.extractfile(m).read()) for m in tar if m.name.endswith(".cls")])  # type: ignore[union-attr]
    return out


def _files(root: Path) -> dict[str, bytes]:
    """Every shard and the manifest, by relative path (markers left out)."""
    paths = [*root.glob("cls/train/*.tar"), root / "manifest.json"]
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


def test_shards_hold_the_dataset_class_mix(sorted_folder: Path, tmp_path: Path) -> None:
    assert _convert(sorted_folder, tmp_path) == 0
    shards = _labels(tmp_path)
    assert [len(s) for s in shards] == [100, 100, 100]
    assert sorted(sum(shards, [])) == sorted(c for c in range(CLASSES) for _ in range(PER_CLASS))
    for labels in shards:
        mix = np.bincount(labels, minlength=CLASSES) / len(labels)
        tvd = 0.5 * np.abs(mix - 1 / CLASSES).sum()
        assert tvd < 0.2, (tvd, mix)  # written in source order, shard 0 would be at 0.6
        assert len(set(labels)) == CLASSES


def test_workers_write_the_same_bytes_and_seed_decides(sorted_folder: Path, tmp_path: Path) -> None:
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    assert _convert(sorted_folder, one, "--workers", "1") == 0
    assert _convert(sorted_folder, two, "--workers", "2") == 0
    assert _files(one) == _files(two) and len(_files(one)) == 4
    assert _convert(sorted_folder, other, "--seed", "1") == 0
    assert _labels(other) != _labels(one)


def test_rerun_rewrites_only_missing_shards(
    sorted_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _convert(sorted_folder, tmp_path, "--workers", "2") == 0
    before = _files(tmp_path)
    shards = sorted(tmp_path.glob("cls/train/*.tar"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    data = bytearray(shards[2].read_bytes())
    data[700] ^= 0xFF
    shards[2].write_bytes(bytes(data))  # same size, another sha256
    capsys.readouterr()
    assert _convert(sorted_folder, tmp_path, "--workers", "2") == 0
    assert "(1 kept from an earlier run)" in capsys.readouterr().out
    assert _files(tmp_path) == before
    assert shards[0].stat().st_mtime_ns == stamps[shards[0].name]
    assert not list(tmp_path.glob("cls/train/.*.tmp.*"))  # no temporary file left behind
    # Another seed is another conversion: nothing is kept.
    assert _convert(sorted_folder, tmp_path, "--seed", "3") == 0
    assert "(0 kept from an earlier run)" in capsys.readouterr().out
    # Fewer, larger shards: those numbered past the new last one are removed with their markers.
    args = ["convert", "imagefolder", "--src", str(sorted_folder), "--out", str(tmp_path)]
    assert shards_main([*args, "--quiet", "--samples-per-shard", "200"]) == 0
    assert sorted(p.name for p in tmp_path.glob("cls/train/*.tar")) == [
        "imagefolder-000000.tar", "imagefolder-000001.tar",
    ]  # fmt: skip
    assert len(list(tmp_path.glob("cls/train/.convert/*.json"))) == 2


def test_bad_items_are_counted_and_keys_stay(
    sorted_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    for c in range(3):
        (src / f"c{c}").mkdir(parents=True)
        for i in range(4):
            (src / f"c{c}" / f"{i}.jpg").write_bytes(
                (sorted_folder / f"class0{c}/img00{i}.jpg").read_bytes()
            )
    good = tmp_path / "good"
    assert _convert(src, good) == 0
    broken = src / "c1" / "2.jpg"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated: a header and nothing else
    bad = tmp_path / "bad"
    assert _convert(src, bad) == 0
    assert "skipped {'bad_image': 1}" in capsys.readouterr().out

    def samples(root: Path) -> dict[str, bytes]:
        shard = root / load_manifest(root).task("cls").splits["train"][0].path
        with tarfile.open(shard) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]

    kept, full = samples(bad), samples(good)
    assert len(full) - len(kept) == 3  # the one sample's jpg, json and cls members
    assert all(full[name] == data for name, data in kept.items())  # same keys, same bytes
    assert load_manifest(bad).task("cls").num_samples("train") == 11
    assert json.loads(next(v for k, v in kept.items() if k.endswith(".json")))["width"] == 16


def test_verify_warns_about_sorted_shards(
    sorted_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shuffled, sorted_root = tmp_path / "shuffled", tmp_path / "sorted"
    assert _convert(sorted_folder, shuffled) == 0
    capsys.readouterr()
    assert shards_main(["verify", str(shuffled)]) == 0
    assert "WARNING" not in capsys.readouterr().err
    # The same images written in source (class) order, as a tool that does not shuffle would.
    classes = sorted(d.name for d in sorted_folder.iterdir())
    with ShardWriter(sorted_root, "cls", "train", "other", samples_per_shard=100) as w:
        for label, name in enumerate(classes):
            for path in sorted((sorted_folder / name).iterdir()):
                ann = json.dumps({"width": 16, "height": 12, "label": label}).encode()
                key = f"{name}_{path.stem}"
                w.write(key, {"jpg": path.read_bytes(), "json": ann, "cls": str(label).encode()})
    task = TaskManifest("cls", "classification", "other", {"classes": classes})
    task.splits["train"] = w.shards
    save_manifest(sorted_root, Manifest(tasks={"cls": task}))
    assert shards_main(["verify", str(sorted_root)]) == 0  # valid data: warned, not failed
    captured = capsys.readouterr()
    for k in range(3):  # classes 0-3, 3-6, 6-9: 0.60 from the uniform mix each
        assert f"WARNING cls/train/other-00000{k}.tar: its label mix is 0.60" in captured.err
    assert "3 shard(s) with a label mix far from their task's" in captured.out


def test_byte_cap_warns_and_never_cuts(
    sorted_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--samples-per-shard alone decides the cut (a byte cut would depend on earlier shards)."""
    assert _convert(sorted_folder, tmp_path, "--shard-mb", "0.05") == 0
    assert "3 shard(s) above --shard-mb 0.05" in capsys.readouterr().out
    assert [len(s) for s in _labels(tmp_path)] == [100, 100, 100]
