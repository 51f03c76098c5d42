"""`gppf-shards build`: a spec naming an ImageFolder tree, a COCO tree and a dataset the source
root lacks, built tiny in the real on-disk formats (JPEG files, COCO's instances JSON), converts
what is there into one manifest, names what is missing or broken, and a rerun keeps the
finished shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.convert.build import (
    CONVERTED,
    MISSING,
    build_corpus,
    format_build_table,
    select_datasets,
)
from gppf_dist.data.convert.corpus_spec import load_corpus_spec
from gppf_dist.data.format.manifest import load_manifest

SPEC = """\
name: tiny
tasks:
  cls_object:
    type: classification
    num_labels: 2
    datasets:
      - {name: imagenet1k, task: cls_object, layout: imagefolder, folder: imagenet, samples: 6,
         splits: {train: {src: train}, val: {src: val}}}
  det:
    type: detection
    num_labels: 2
    datasets:
      - {name: coco, task: det, layout: coco-det, folder: coco, samples: 5,
         splits: {train: {src: .}, val: {src: .}}}
      - {name: objects365, task: det_objects365, layout: coco-det, folder: Objects365,
         samples: 1742292, splits: {train: {src: train/zhiyuan_objv2_train.json}}}
"""


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def _imagenet(root: Path) -> None:
    for split, n in (("train", 3), ("val", 1)):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            for i in range(n):
                _jpeg(root / split / wnid / f"{wnid}_{i + 1}.JPEG", 10 * c + i)


def _coco(root: Path) -> None:
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    for split, n in (("train", 5), ("val", 2)):
        images, anns = [], []
        for i in range(n):
            name = f"{i + 1:012d}.jpg"
            _jpeg(root / f"{split}2017" / name, i, (64, 48))
            images.append({"id": i + 1, "file_name": name, "width": 64, "height": 48})
            anns.append({"id": 100 + i, "image_id": i + 1, "category_id": 18 if i % 2 else 1,
                         "bbox": [4, 4, 20, 10], "iscrowd": 0, "area": 200})  # fmt: skip
        data = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """(spec file, source root holding imagenet/ and coco/ but no Objects365/)."""
    src = tmp_path / "data"
    _imagenet(src / "imagenet")
    _coco(src / "coco")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    return spec, src


def _shard_bytes(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*.tar")}  # fmt: skip


def test_build_converts_what_is_there(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    spec_file, src = corpus
    spec, out, lines = load_corpus_spec(str(spec_file)), tmp_path / "out", []
    report = build_corpus(spec, src, out, samples_per_shard=2, log=lines.append)
    got = [(r.dataset, r.task, r.split, r.status, r.samples, r.shards) for r in report.rows]
    assert got == [
        ("imagenet1k", "cls_object", "train", CONVERTED, 6, 3),
        ("imagenet1k", "cls_object", "val", CONVERTED, 2, 1),
        ("coco", "det", "train", CONVERTED, 5, 3),
        ("coco", "det", "val", CONVERTED, 2, 1),
        ("objects365", "det_objects365", "-", MISSING, 0, 0),
    ]
    assert report.rows[-1].detail == str(src / "Objects365") and report.exit_code() == 0
    manifest = load_manifest(out)
    assert sorted(manifest.tasks) == ["cls_object", "det"]
    assert manifest.task("cls_object").label_space == {"classes": ["n01440764", "n01443537"]}
    assert manifest.task("det").num_samples("val") == 2
    # one line as each split starts and one as it ends; one for the missing dataset
    assert len(lines) == 9 and lines[0].startswith("[1/3] imagenet1k train -> cls_object: conv")
    assert "6 samples in 3 shards (0 kept from an earlier run), skipped none" in lines[1]
    missing = src / "Objects365"
    assert lines[-1] == f"[3/3] objects365 - -> det_objects365: missing {missing}, skipped"
    table = format_build_table(report).splitlines()
    assert table[0] == "dataset     task            split  samples  shards  skipped  status"
    assert table[-2].endswith(f"missing: {src / 'Objects365'}")
    assert table[-1] == f"4 converted, 1 missing, 0 failed; manifest: {out / 'manifest.json'}"

    before = _shard_bytes(out)
    again = build_corpus(spec, src, out, samples_per_shard=2)
    assert [(r.status, r.kept, r.shards) for r in again.rows[:4]] == [(CONVERTED, n, n) for n in
                                                                      (3, 1, 3, 1)]  # fmt: skip
    assert _shard_bytes(out) == before  # every finished shard kept as it was


def test_only_picks_datasets_or_tasks(corpus: tuple[Path, Path]) -> None:
    spec = load_corpus_spec(str(corpus[0]))
    assert [d.name for d in select_datasets(spec, ["det"])] == ["coco", "objects365"]
    assert [d.name for d in select_datasets(spec, ["objects365", "imagenet1k"])] == [
        "imagenet1k", "objects365"
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"--only \['places'\] names no dataset or task"):
        select_datasets(spec, ["places"])


def test_cli_build_table_and_exit_codes(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, src = corpus
    out = tmp_path / "out"
    args = ["build", "--spec", str(spec), "--out", str(out), "--samples-per-shard", "4"]
    ann = src / "coco" / "annotations" / "instances_train2017.json"
    good = ann.read_text()
    ann.write_text(good[: len(good) // 2])  # a truncated download
    assert shards_main([*args, "--src-root", str(src)]) == 1
    text = capsys.readouterr().out
    assert "FAILED after" in text and f"cannot read COCO JSON {ann}" in text
    rows = {tuple(line.split()[:3]): line for line in text.splitlines()}
    assert rows["coco", "det", "train"].split()[3:7] == ["0", "0", "0", "failed:"]
    assert rows["coco", "det", "val"].split()[3:] == ["2", "1", "0", "converted"]
    assert rows["imagenet1k", "cls_object", "train"].split()[3:] == ["6", "2", "0", "converted"]
    assert sorted(load_manifest(out).tasks) == ["cls_object", "det"]  # val made it in

    ann.write_text(good)  # fixed: the rerun converts it and keeps the others' shards
    assert shards_main([*args, "--src-root", str(src)]) == 0
    text = capsys.readouterr().out
    assert "5 samples in 2 shards (0 kept from an earlier run)" in text
    assert "6 samples in 2 shards (2 kept from an earlier run)" in text
    rows = {tuple(line.split()[:3]): line for line in text.splitlines()}
    assert rows["objects365", "det_objects365", "-"].split()[3:] == [
        "0", "0", "0", "missing:", str(src / "Objects365")
    ]  # fmt: skip
    assert rows["coco", "det", "train"].split()[3:] == ["5", "2", "0", "converted"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert shards_main([*args, "--src-root", str(empty), "--only", "det"]) == 2
    captured = capsys.readouterr()
    assert f"missing: {empty / 'coco'}" in captured.out
    assert f"found none of spec 'tiny''s datasets under --src-root {empty}" in captured.err
    assert shards_main([*args, "--src-root", str(tmp_path / "nowhere")]) == 2
    assert f"--src-root {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err


def _coco_release(root: Path) -> None:
    """COCO's own tree: `annotations/{instances,person_keypoints}_<split>2017.json`."""
    _coco(root)
    cat = {"id": 1, "name": "person", "keypoints": ["nose", "left_eye"], "skeleton": [[1, 2]]}
    for split in ("train", "val"):
        data = json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())
        people = [dict(a, num_keypoints=1, keypoints=[10, 8, 2, 0, 0, 0])
                  for a in data["annotations"] if a["category_id"] == 1]  # fmt: skip
        kp = {"images": data["images"], "annotations": people, "categories": [cat]}
        (root / "annotations" / f"person_keypoints_{split}2017.json").write_text(json.dumps(kp))


def _shipped_layouts_tree(src: Path) -> None:
    """Each named dataset in its release layout, at the shipped spec's folder names."""
    _imagenet(src / "imagenet")
    _coco_release(src / "coco")
    o365 = src / "Objects365" / "train"  # train only: its val split is reported missing
    name = "images/v1/patch0/objects365_v1_00000001.jpg"
    _jpeg(o365 / name, 1, (64, 48))
    o365_ann = {"images": [{"id": 1, "file_name": name, "width": 64, "height": 48}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 9, 9],
                                 "iscrowd": 0}],
                "categories": [{"id": 5, "name": "Sneakers"}]}  # fmt: skip
    (o365 / "zhiyuan_objv2_train.json").write_text(json.dumps(o365_ann))
    msmt = src / "MSMT17_V1"
    for list_name, folder, rel, pid in (
        ("list_train.txt", "train", "0003/0003_000_04_0303noon_0001_0.jpg", 3),
        ("list_val.txt", "train", "0003/0003_001_05_0303noon_0002_0.jpg", 3),
        ("list_query.txt", "test", "0000/0000_000_02_0113noon_0003_0.jpg", 0),
        ("list_gallery.txt", "test", "0000/0000_001_06_0113noon_0004_0.jpg", 0),
    ):
        _jpeg(msmt / folder / rel, len(list_name), (24, 48))
        (msmt / list_name).write_text(f"{rel} {pid}\n")
    for folder, name in (("bounding_box_train", "0001_c1_1.png"), ("query", "0002_c1_1.png"),
                         ("bounding_box_test", "0002_c2_1.png")):  # fmt: skip
        path = src / "cuhk03-np" / "detected" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 48), (90, 30, 30)).save(path)
    pa = src / "PA-100K"
    mat: dict[str, object] = {"attributes": np.array([["Female"], ["Hat"]], dtype=object)}
    for part, first in (("train", 1), ("val", 80001), ("test", 90001)):
        _jpeg(pa / "release_data" / "release_data" / f"{first:06d}.jpg", first, (24, 48))
        mat[f"{part}_images_name"] = np.array([[f"{first:06d}.jpg"]], dtype=object)
        mat[f"{part}_label"] = np.array([[1, 0]], dtype=np.uint8)
    scipy.io.savemat(pa / "annotation.mat", mat)


def test_shipped_spec_paths_fit_the_layouts(tmp_path: Path) -> None:
    """The shipped spec's `src`/`images` per split, on tiny releases of its datasets."""
    src, out = tmp_path / "data", tmp_path / "out"
    _shipped_layouts_tree(src)
    only = ["imagenet1k", "coco", "objects365", "coco_keypoints", "msmt17", "cuhk03", "pa100k"]
    report = build_corpus(load_corpus_spec("gppf15m"), src, out, only=only)
    got = {(r.task, r.split): (r.status, r.samples) for r in report.rows}
    assert got == {
        ("cls_object", "train"): (CONVERTED, 6), ("cls_object", "val"): (CONVERTED, 2),
        ("det", "train"): (CONVERTED, 5), ("det", "val"): (CONVERTED, 2),
        ("det_objects365", "train"): (CONVERTED, 1), ("det_objects365", "val"): (MISSING, 0),
        ("pose", "train"): (CONVERTED, 3), ("pose", "val"): (CONVERTED, 1),
        ("reid_msmt17", "train"): (CONVERTED, 2), ("reid_msmt17", "val"): (CONVERTED, 2),
        ("reid_cuhk03", "train"): (CONVERTED, 1), ("reid_cuhk03", "val"): (CONVERTED, 2),
        ("attr", "train"): (CONVERTED, 1), ("attr", "val"): (CONVERTED, 1),
    }, [r.detail for r in report.rows if r.detail]  # fmt: skip
    missing = src / "Objects365" / "val" / "zhiyuan_objv2_val.json"
    assert report.rows[5].detail == str(missing) and report.exit_code() == 0
    assert load_manifest(out).task("det_objects365").dataset == "objects365"
