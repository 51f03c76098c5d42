"""`gppf-shards convert`: a tiny dataset in each standard layout converts into shards that verify
and read back through `TaskLoader` with the real task types, all merged into one manifest."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.format.manifest import load_manifest
from gppf_dist.data.load.loader import TaskLoader
from gppf_dist.tasks.registry import get_task_type, make_spec


def _img(path: Path, i: int, size: tuple[int, int] = (40, 32), fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(i)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, format=fmt
    )


def _coco(tmp: Path, keypoints: bool) -> Path:
    images, anns = [], []
    for i in range(4):
        _img(tmp / "images" / f"{i:03d}.jpg", i, (64, 48))
        images.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "width": 64, "height": 48})
        anns.append(
            {
                "id": 10 + i,
                "image_id": i + 1,
                "category_id": 7 if i % 2 else 3,
                "bbox": [5.0, 6.0, 20.0, 30.0],
                "iscrowd": 0,
                "num_keypoints": 2,
                "keypoints": [10, 12, 2, 15, 20, 1, 0, 0, 0],
            }
        )
    anns.append({"id": 99, "image_id": 1, "category_id": 3, "bbox": [60, 40, 30, 30], "iscrowd": 1})
    cats = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    if keypoints:
        cats = [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": [[1, 2]]}]
        for a in anns:
            a["category_id"] = 1
    path = tmp / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _make(layout: str, tmp: Path) -> Path:
    """Build a tiny source dataset in `layout`; returns the --src path."""
    if layout in ("imagefolder", "face-folders"):
        for c, name in enumerate(["ann", "bob", "cy"]):
            for i in range(3):
                _img(
                    tmp / name / f"x{i}.{'png' if i == 2 else 'jpg'}",
                    10 * c + i,
                    fmt="PNG" if i == 2 else "JPEG",
                )
        return tmp
    if layout in ("coco-det", "coco-keypoints"):
        return _coco(tmp, layout == "coco-keypoints")
    if layout == "seg-png":
        for i in range(4):
            _img(tmp / "images" / f"s{i}.jpg", i)
            mask = np.zeros((32, 40), dtype=np.uint8)
            mask[4:20, 5:25] = 1 + i % 2
            mask[0, 0] = 255
            (tmp / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask, mode="L").save(tmp / "masks" / f"s{i}.png")
        (tmp / "classes.txt").write_text("background\nleft\nright\n")
        return tmp
    if layout == "reid":
        for name in [
            "0002_c1s1_000451_03.jpg",
            "0002_c3s1_000551_01.jpg",
            "0007_c2s2_000100_01.jpg",
            "-1_c1s1_000001_00.jpg",
            "0000_c4s1_000002_00.jpg",
            "0011_c6s3_000200_02.jpg",
        ]:
            _img(tmp / name, len(name))
        return tmp
    assert layout == "attr-csv"
    rows = ["image,female,hat,backpack"]
    for i in range(5):
        _img(tmp / "images" / f"p{i}.jpg", i, (24, 48))
        rows.append(f"p{i}.jpg,{i % 2},{(i // 2) % 2},1")
    rows.append("p0.jpg,1,2,0")  # not 0/1: skipped
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp / "labels.csv"


EXPECTED = {  # layout -> (task, type, samples)
    "imagefolder": ("cls", "classification", 9),
    "coco-det": ("det", "detection", 4),
    "coco-keypoints": ("pose", "pose", 4),
    "seg-png": ("seg", "segmentation", 4),
    "reid": ("reid", "reid", 4),
    "face-folders": ("face", "face", 9),
    "attr-csv": ("attr", "attributes", 5),
}


def _members(root: Path, task: str, ext: str) -> list[bytes]:
    """The `ext` members of every train shard of `task`, in shard order."""
    out = []
    for shard in load_manifest(root).task(task).splits["train"]:
        with tarfile.open(root / shard.path) as tar:
            out += [tar.extractfile(m).read() for m in tar if m.name.endswith(ext)]  # type: ignore[union-attr]
    return out


def _read_all(root: Path, task: str) -> list:
    manifest = load_manifest(root)
    tm = manifest.task(task)
    spec = make_spec(task, tm.type, (32, 32), tm.label_space)
    loader = TaskLoader(
        root=root,
        manifest=manifest,
        task=task,
        spec=spec,
        task_type=get_task_type(tm.type),
        num_streams=1,
        stream_ids=[0],
        per_stream_batch=tm.num_samples("train"),
        seed=0,
    )
    batch = next(loader)
    assert loader.skipped == {}, loader.skipped
    return [batch]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    for layout in EXPECTED:
        src = _make(layout, tmp_path_factory.mktemp(layout.replace("-", "_")))
        args = ["convert", layout, "--src", str(src), "--out", str(out), "--samples-per-shard", "3"]
        assert shards_main(args) == 0, layout
    return out


@pytest.mark.parametrize("layout", list(EXPECTED))
def test_layout_converts_and_reads_back(converted: Path, layout: str) -> None:
    task, typ, n = EXPECTED[layout]
    tm = load_manifest(converted).task(task)
    assert tm.type == typ and tm.num_samples("train") == n
    assert len(tm.splits["train"]) == -(-n // 3)  # --samples-per-shard 3
    batch = _read_all(converted, task)[0]
    assert batch.images.shape == (n, 3, 32, 32)


def test_labels_are_mapped(converted: Path) -> None:
    m = load_manifest(converted)
    assert m.task("det").label_space == {"classes": ["cat", "dog"]}
    assert m.task("cls").label_space == {"classes": ["ann", "bob", "cy"]}
    assert m.task("pose").label_space["skeleton"] == [[0, 1]]
    assert m.task("reid").label_space["num_identities"] == 12
    assert m.task("attr").label_space == {"attributes": ["female", "hat", "backpack"]}
    assert m.task("seg").label_space == {"classes": ["background", "left", "right"]}


def test_coco_boxes_become_absolute_xyxy(converted: Path) -> None:
    shard = converted / load_manifest(converted).task("det").splits["train"][0].path
    with tarfile.open(shard) as tar:
        anns = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]  # type: ignore[union-attr]
    assert all(a["boxes"] == [[5.0, 6.0, 25.0, 36.0]] for a in anns)  # the crowd box is gone
    assert all(len(a["labels"]) == 1 for a in anns)
    every = _members(converted, "det", ".json")
    assert sorted(json.loads(a)["labels"][0] for a in every) == [0, 0, 1, 1]


def test_reid_names_and_verify(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shard = converted / load_manifest(converted).task("reid").splits["train"][0].path
    with tarfile.open(shard) as tar:
        anns = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]  # type: ignore[union-attr]
    assert (anns[0]["identity"], anns[0]["camera"]) in {(2, 1), (2, 3), (7, 2), (11, 6)}
    every = [json.loads(a) for a in _members(converted, "reid", ".json")]
    assert sorted((a["identity"], a["camera"]) for a in every) == [(2, 1), (2, 3), (7, 2), (11, 6)]
    assert shards_main(["verify", str(converted)]) == 0
    assert "OK: 0 problem(s)" in capsys.readouterr().out
