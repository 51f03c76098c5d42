"""COCO-Stuff 164k's label maps and AI Challenger's keypoint JSON, each built tiny in the released
on-disk format (COCO JPEGs beside `annotations/<split>2017/<id>.png` 8-bit label maps and
COCO-Stuff's `labels.txt`; AIC's JSON list of image entries beside its image folder), convert
into shards that verify, and every source item is either a sample or counted by reason."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.convert.build import CONVERTED, build_corpus
from gppf_dist.data.convert.corpus_spec import load_corpus_spec
from gppf_dist.data.convert.layouts.base import ItemError
from gppf_dist.data.convert.readers import LAYOUTS
from gppf_dist.data.format.manifest import load_manifest


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def _convert(layout: str, src: Path, out: Path, split: str, *extra: str) -> int:
    args = ["convert", layout, "--src", str(src), "--out", str(out), "--split", split]
    return shards_main([*args, "--quiet", "--samples-per-shard", "2", *extra])


def _members(root: Path, task: str, split: str, ext: str) -> list[bytes]:
    out = []
    for shard in load_manifest(root).task(task).splits[split]:
        with tarfile.open(root / shard.path) as tar:
            out += [tar.extractfile(m).read() for m in tar if m.name.endswith(ext)]  # type: ignore[union-attr]
    return out


def _verified(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert shards_main(["verify", str(root)]) == 0, capsys.readouterr().err
    assert "OK: 0 problem(s)" in capsys.readouterr().out


# --- COCO-Stuff 164k --------------------------------------------------------------------------


def _label_map(i: int) -> np.ndarray:
    """A 32x40 label map: things (0, 90), stuff (91, 181), unlabelled (255), and id i + 1 in the
    corner so every map differs."""
    mask = np.full((32, 40), 255, dtype=np.uint8)
    mask[:8], mask[8:16], mask[16:20], mask[20:24] = 0, 90, 91, 181
    mask[0, 0] = i + 1
    return mask


def _save_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask, mode="L").save(path)


def _labels_txt(path: Path) -> None:
    """COCO-Stuff's labels.txt: `<id>: <name>`, 0 = unlabeled, classes 1..182."""
    known = {0: "unlabeled", 1: "person", 2: "bicycle", 92: "banner", 182: "wood"}
    path.write_text("".join(f"{k}: {known.get(k, f'label{k}')}\n" for k in range(183)))


def _cocostuff(root: Path) -> dict[str, list[np.ndarray]]:
    """COCO-Stuff's tree: `images/<split>2017/<id>.jpg` + `annotations/<split>2017/<id>.png`.
    Train: 3 good maps, one with id 200 (bad), one image without a map, one map without an
    image; val: 1. Returns the good maps per split."""
    good: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            stem = f"{(i + 1) * 9 + (split == 'val') * 1000:012d}"
            _jpeg(root / "images" / f"{split}2017" / f"{stem}.jpg", i)
            good[split].append(_label_map(i + 10 * (split == "val")))
            _save_png(root / "annotations" / f"{split}2017" / f"{stem}.png", good[split][-1])
    bad = _label_map(7)
    bad[30, 30] = 200
    _jpeg(root / "images" / "train2017" / "000000000777.jpg", 7)
    _save_png(root / "annotations" / "train2017" / "000000000777.png", bad)
    _jpeg(root / "images" / "train2017" / "000000000888.jpg", 8)  # no label map
    _save_png(root / "annotations" / "train2017" / "000000000999.png", _label_map(9))  # no image
    return good


def test_coco_stuff_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, out = tmp_path / "cocostuff", tmp_path / "out"
    good = _cocostuff(root)
    _labels_txt(root / "labels.txt")
    assert _convert("coco-stuff", root, out, "train") == 0  # the tree's root
    log = capsys.readouterr().out
    assert "seg (segmentation) train: 3 samples" in log
    assert "skipped {'bad_mask_id': 1, 'missing_image': 1, 'missing_mask': 1}" in log
    maps = root / "annotations" / "val2017"  # the split's PNG folder, images given
    assert _convert("coco-stuff", maps, out, "val", "--images", str(root / "images/val2017")) == 0
    tm = load_manifest(out).task("seg")  # train and val merged: one label space
    assert (tm.dataset, tm.num_samples("train"), tm.num_samples("val")) == ("cocostuff", 3, 1)
    classes = tm.label_space["classes"]
    assert len(classes) == 182 and classes[:2] == ["person", "bicycle"]
    assert (classes[91], classes[181], classes[2]) == ("banner", "wood", "label3")
    for split in ("train", "val"):
        got = sorted(np.array(Image.open(io.BytesIO(png))).tobytes()
                     for png in _members(out, "seg", split, ".png"))  # fmt: skip
        assert got == sorted(m.tobytes() for m in good[split])  # ids and 255 kept as they are
    _verified(out, capsys)


def test_coco_stuff_bad_inputs_are_counted(tmp_path: Path) -> None:
    """The stuffthingmaps folder (`train2017/*.png`) with images elsewhere; no labels.txt."""
    data = tmp_path / "data"
    _cocostuff(data)
    maps = tmp_path / "stuffthingmaps_trainval2017"
    (data / "annotations").rename(maps)
    conv = LAYOUTS["coco-stuff"][0](maps, data / "images" / "train2017", "train")
    assert conv.label_space == {"classes": [f"class_{i}" for i in range(182)]}
    assert conv.skipped == {"missing_mask": 1, "missing_image": 1}
    names = [Path(m).name for _, m in conv.items]
    assert len(names) == 4 and "000000000777.png" in names
    bad = conv.items[names.index("000000000777.png")]
    with pytest.raises(ItemError, match=r"000000000777.png: ids \[200\] outside 0..181") as exc:
        conv.load(bad)
    assert exc.value.reason == "bad_mask_id"
    first = conv.load(conv.items[0])
    assert set(first) == {"jpg", "json", "png"}
    assert json.loads(first["json"]) == {"width": 40, "height": 32}
    with pytest.raises(ValueError, match="holds no label maps"):
        LAYOUTS["coco-stuff"][0](data, None, "train")
    with pytest.raises(ValueError, match="pass --images"):
        LAYOUTS["coco-stuff"][0](maps, None, "train")
    (maps / "labels.txt").write_text("0: unlabeled\nperson\n")
    with pytest.raises(ValueError, match=r"labels.txt:2: expected `<id>: <name>`"):
        LAYOUTS["coco-stuff"][0](maps, data / "images" / "train2017", "train")


# --- AI Challenger keypoints ------------------------------------------------------------------

AIC_TRAIN = "ai_challenger_keypoint_train_20170902"
AIC_VAL = "ai_challenger_keypoint_validation_20170911"


def _kps(*points: tuple[int, int, int]) -> list[int]:
    """14 flat AIC triples: `points` first, the rest not labelled (v = 3, x = y = 0)."""
    flat = [c for p in points for c in p]
    return flat + [0, 0, 3] * (14 - len(points))


def _aic(root: Path) -> None:
    """AIC's release: per split a folder holding the annotation JSON and the images folder.
    Train: image a (64x72) with a person of visible, occluded and unlabelled keypoints and a
    person with none labelled; image b with one person whose box leaves the image; image c
    listed but absent; image d with a person of 13 triples (malformed). Val: one person."""
    a, b, c, d = (f"{k:040x}" for k in (0xA, 0xB, 0xC, 0xD))
    train = [
        {"url": f"http://example.com/{a}.jpg", "image_id": a,
         "keypoint_annotations": {"human1": _kps((20, 30, 1), (25, 40, 2), (30, 50, 1)),
                                  "human2": _kps()},
         "human_annotations": {"human1": [10, 8, 50, 60], "human2": [0, 0, 20, 20]}},
        {"url": f"http://example.com/{b}.jpg", "image_id": b,
         "keypoint_annotations": {"human1": _kps((5, 6, 1), (70, 10, 1))},
         "human_annotations": {"human1": [2, 2, 90, 30]}},
        {"url": f"http://example.com/{c}.jpg", "image_id": c,
         "keypoint_annotations": {"human1": _kps((5, 6, 1))},
         "human_annotations": {"human1": [2, 2, 20, 30]}},
        {"url": f"http://example.com/{d}.jpg", "image_id": d,
         "keypoint_annotations": {"human1": _kps((5, 6, 1))[:-3]},
         "human_annotations": {"human1": [2, 2, 20, 30]}},
    ]  # fmt: skip
    folder = root / AIC_TRAIN
    for k, image_id in enumerate((a, b, d)):
        _jpeg(folder / "keypoint_train_images_20170902" / f"{image_id}.jpg", k, (64, 72))
    (folder / "keypoint_train_annotations_20170909.json").write_text(json.dumps(train))
    v = f"{0xE:040x}"
    val = [{"url": f"http://example.com/{v}.jpg", "image_id": v,
            "keypoint_annotations": {"human1": _kps((12, 14, 2), (16, 20, 1))},
            "human_annotations": {"human1": [4, 4, 30, 40]}}]  # fmt: skip
    _jpeg(root / AIC_VAL / "keypoint_validation_images_20170911" / f"{v}.jpg", 9, (48, 56))
    (root / AIC_VAL / "keypoint_validation_annotations_20170911.json").write_text(json.dumps(val))


def test_aic_keypoints_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, out = tmp_path / "ai_challenger", tmp_path / "out"
    _aic(root)
    ann = root / AIC_TRAIN / "keypoint_train_annotations_20170909.json"
    images = root / AIC_TRAIN / "keypoint_train_images_20170902"
    assert _convert("aic-keypoints", ann, out, "train", "--images", str(images)) == 0
    log = capsys.readouterr().out
    assert "pose (pose) train: 2 samples" in log
    assert "skipped {'bad_annotation': 1, 'missing_image': 1, 'no_keypoints': 1}" in log
    assert _convert("aic-keypoints", root, out, "val") == 0  # the folder: file and images found
    tm = load_manifest(out).task("pose")
    assert (tm.dataset, tm.num_samples("train"), tm.num_samples("val")) == ("aic", 2, 1)
    names = tm.label_space["keypoints"]
    assert len(names) == 14 and names[0] == "right_shoulder" and names[12:] == ["head_top", "neck"]
    assert [12, 13] in tm.label_space["skeleton"] and [13, 3] in tm.label_space["skeleton"]
    people = [json.loads(j) for j in _members(out, "pose", "train", ".json")]
    assert all(len(p["keypoints"]) == 14 for p in people)
    # image a, person 1: box [10, 8, 50, 60] grown by 15 % -> crop x 4..56, y 0..68
    a = next(p for p in people if p["width"] == 52)
    assert (a["height"], a["box"]) == (68, [6.0, 8.0, 46.0, 60.0])
    assert a["keypoints"][:3] == [[16.0, 30.0, 2], [21.0, 40.0, 1], [26.0, 50.0, 2]]
    assert all(kp == [0.0, 0.0, 0] for kp in a["keypoints"][3:])  # AIC v = 3: not labelled
    # image b: box [2, 2, 90, 30] leaves the 64-wide image: the crop (x 0..64, y 0..35) and the
    # box are clipped, and the keypoint at x = 70 outside it is unlabelled (as coco-keypoints)
    b = next(p for p in people if p["width"] == 64)
    assert (b["height"], b["box"]) == (35, [2.0, 2.0, 64.0, 30.0])
    assert b["keypoints"][:2] == [[5.0, 6.0, 2], [0.0, 0.0, 0]]
    _verified(out, capsys)


def test_aic_reader_counts_every_person(tmp_path: Path) -> None:
    root = tmp_path / "ai_challenger"
    _aic(root)
    conv = LAYOUTS["aic-keypoints"][0](root, None, "train")  # the folder: file found in it
    assert (conv.type, conv.dataset) == ("pose", "aic")
    assert conv.skipped == {"no_keypoints": 1, "bad_annotation": 1}
    assert len(conv.items) == 3  # 5 people in the file: 3 listed + 2 counted
    assert [name[:40] for name, _ in conv.items] == [f"{k:040x}" for k in (0xA, 0xB, 0xC)]
    with pytest.raises(ItemError, match=f"{0xC:040x}.jpg is in none of") as exc:
        conv.load(conv.items[2])
    assert exc.value.reason == "missing_image"
    ann = json.loads(conv.load(conv.items[0])["json"])
    assert [v for *_, v in ann["keypoints"][:3]] == [2, 1, 2]  # AIC 1 -> 2, 2 -> 1
    with pytest.raises(ValueError, match="holds no keypoint_validation_annotations_"):
        LAYOUTS["aic-keypoints"][0](root / AIC_TRAIN, None, "val")
    broken = root / AIC_TRAIN / "keypoint_train_annotations_20170909.json"
    broken.write_text(broken.read_text()[:100])
    with pytest.raises(ValueError, match=f"cannot read {broken}"):
        LAYOUTS["aic-keypoints"][0](broken, None, "train")
    broken.write_text(json.dumps({"image_id": "x"}))
    with pytest.raises(ValueError, match="no image entries"):
        LAYOUTS["aic-keypoints"][0](broken, None, "train")


# --- gppf-shards build ------------------------------------------------------------------------

SPEC = """\
name: tiny
tasks:
  seg:
    type: segmentation
    num_labels: 182
    datasets:
      - {name: cocostuff, task: seg, layout: coco-stuff, folder: cocostuff, samples: 3,
         splits: {train: {src: annotations/train2017, images: images/train2017},
                  val: {src: annotations/val2017, images: images/val2017}}}
  pose:
    type: pose
    num_labels: 14
    datasets:
      - {name: aic, task: pose, layout: aic-keypoints, folder: ai_challenger, samples: 2,
         splits: {train: {src: .}, val: {src: .}}}
"""


def test_build_spec_with_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "data", tmp_path / "out"
    _cocostuff(src / "cocostuff")
    _aic(src / "ai_challenger")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    args = ["build", "--spec", str(spec), "--src-root", str(src), "--out", str(out)]
    assert shards_main([*args, "--samples-per-shard", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in lines}
    assert rows["cocostuff", "seg", "train"] == ["3", "2", "3", "converted"]
    assert rows["cocostuff", "seg", "val"] == ["1", "1", "0", "converted"]
    assert [rows["aic", "pose", "train"][i] for i in (0, 2, 3)] == ["2", "3", "converted"]
    assert rows["aic", "pose", "val"] == ["1", "1", "0", "converted"]
    _verified(out, capsys)

    # the shipped spec's folders and split sources fit the releases' trees
    shipped = tmp_path / "shipped"
    report = build_corpus(load_corpus_spec("gppf15m"), src, shipped, only=["cocostuff", "aic"])
    got = {(r.task, r.split): (r.status, r.samples) for r in report.rows}
    assert got == {
        ("seg_cocostuff", "train"): (CONVERTED, 3), ("seg_cocostuff", "val"): (CONVERTED, 1),
        ("pose_aic", "train"): (CONVERTED, 2), ("pose_aic", "val"): (CONVERTED, 1),
    }, [r.detail for r in report.rows if r.detail]  # fmt: skip
    manifest = load_manifest(shipped)
    assert len(manifest.task("seg_cocostuff").label_space["classes"]) == 182
    assert manifest.task("pose_aic").dataset == "aic"
