"""The real datasets' on-disk layouts, each built tiny in its exact format (COCO's tree, ADE20K's
release, Market-1501's folders, insightface RecordIO bytes, PA-100K/RAP `.mat` files), convert
into shards that verify."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.convert.readers import LAYOUTS
from gppf_dist.data.convert.recordio import MAGIC
from gppf_dist.data.format.manifest import load_manifest


def _jpeg_bytes(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_jpeg_bytes(seed, size))


def _convert(layout: str, src: Path, out: Path, split: str = "train", *extra: str) -> int:
    args = ["convert", layout, "--src", str(src), "--out", str(out), "--split", split]
    return shards_main([*args, "--quiet", "--samples-per-shard", "4", *extra])


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


# --- COCO's own tree -----------------------------------------------------------------------


def _coco_tree(root: Path) -> None:
    cats = [{"id": 1, "name": "person", "keypoints": ["nose", "eye"], "skeleton": [[1, 2]]}]
    cats.append({"id": 18, "name": "dog"})
    for split, n in (("train", 5), ("val", 2)):
        images, anns = [], []
        for i in range(n):
            name = f"{i + 1:012d}.jpg"
            _jpeg(root / f"{split}2017" / name, i, (64, 48))
            images.append({"id": i + 1, "file_name": name, "width": 64, "height": 48})
            anns.append({"id": 100 + i, "image_id": i + 1, "category_id": 18,
                         "bbox": [4, 4, 20, 10], "iscrowd": 0, "area": 200})  # fmt: skip
            anns.append({"id": 200 + i, "image_id": i + 1, "category_id": 1,
                         "bbox": [10, 8, 30, 30], "iscrowd": 0, "num_keypoints": 1,
                         "keypoints": [20, 20, 2, 0, 0, 0]})  # fmt: skip
        data = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
        kp = {**data, "categories": cats[:1], "annotations": anns[1::2]}
        (root / "annotations" / f"person_keypoints_{split}2017.json").write_text(json.dumps(kp))


def test_coco_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "coco", tmp_path / "out"
    _coco_tree(src)
    for split in ("train", "val"):
        assert _convert("coco-det", src, out, split) == 0
        assert _convert("coco-keypoints", src, out, split) == 0
    det, pose = load_manifest(out).task("det"), load_manifest(out).task("pose")
    assert (det.num_samples("train"), det.num_samples("val")) == (5, 2)
    assert (pose.num_samples("train"), pose.num_samples("val")) == (5, 2)
    assert det.label_space == {"classes": ["person", "dog"]} and det.dataset == "coco"
    boxes = sorted(map(tuple, sum((a["boxes"] for a in _annotations(out, "det", "val")), [])))
    assert boxes == [(4.0, 4.0, 24.0, 14.0), (4.0, 4.0, 24.0, 14.0)] + [(10.0, 8.0, 40.0, 38.0)] * 2
    _verified(out, capsys)
    with pytest.raises(ValueError, match="instances_train2017.json"):
        LAYOUTS["coco-det"][0](tmp_path, None, "train")


def test_objects365_json_with_images(tmp_path: Path) -> None:
    src = tmp_path / "o365"
    _coco_tree(src)
    ann = src / "zhiyuan_objv2_train.json"
    (src / "annotations" / "instances_train2017.json").rename(ann)
    conv = LAYOUTS["coco-det"][0](ann, src / "train2017", "train")
    assert conv.dataset == "objects365" and len(conv.items) == 5
    assert len(json.loads(conv.load(conv.items[0])["json"])["boxes"]) == 2


# --- ADE20K -----------------------------------------------------------------------------------


def test_ade20k_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data" / "ADEChallengeData2016"
    for part, prefix, n in (("training", "ADE_train", 3), ("validation", "ADE_val", 1)):
        for i in range(n):
            stem = f"{prefix}_{i + 1:08d}"
            _jpeg(root / "images" / part / f"{stem}.jpg", i)
            mask = np.zeros((32, 40), dtype=np.uint8)  # 0: "other"
            mask[:8] = 1
            mask[8:16] = 150
            (root / "annotations" / part).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, mode="L").save(root / "annotations" / part / f"{stem}.png")
    _jpeg(root / "images" / "training" / "ADE_train_00000009.jpg", 9)  # no mask
    rows = ["Idx\tRatio\tTrain\tVal\tName", "1\t0.1576\t11664\t1172\twall"]
    rows += ["2\t0.1072\t6046\t612\tbuilding, edifice", "150\t0.0001\t1\t1\tflag"]
    (root / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert _convert("ade20k", tmp_path / "data", out) == 0  # the parent of the release
    assert "skipped {'missing_mask': 1}" in capsys.readouterr().out
    assert _convert("ade20k", root, out, "val") == 0  # the release folder itself
    tm = load_manifest(out).task("seg")
    assert (tm.num_samples("train"), tm.num_samples("val"), tm.dataset) == (3, 1, "ade20k")
    classes = tm.label_space["classes"]
    assert len(classes) == 150 and classes[:2] == ["wall", "building, edifice"]
    assert classes[149] == "flag" and classes[2] == "class_3"
    with tarfile.open(out / tm.splits["train"][0].path) as tar:
        png = next(tar.extractfile(m).read() for m in tar if m.name.endswith(".png"))  # type: ignore[union-attr]
    mask = np.array(Image.open(io.BytesIO(png)))
    assert (mask[:8] == 0).all() and (mask[8:16] == 149).all() and (mask[16:] == 255).all()
    _verified(out, capsys)


# --- Market-1501 ------------------------------------------------------------------------------


def test_market1501_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "Market-1501-v15.09.15"
    names = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                               "0007_c3s3_015240_04.jpg", "1500_c6s3_085642_02.jpg",
                               "0000_c1s1_000000_00.jpg", "-1_c1s1_000401_03.jpg"],
        "query": ["0001_c1s1_001051_00.jpg", "0003_c3s1_000576_00.jpg"],
        "bounding_box_test": ["0001_c2s1_000976_01.jpg", "0003_c1s1_001001_02.jpg",
                              "-1_c3s1_000051_01.jpg", "0000_c6s1_002226_04.jpg"],
    }  # fmt: skip
    for i, (folder, files) in enumerate(names.items()):
        for j, name in enumerate(files):
            _jpeg(src / folder / name, 10 * i + j, (32, 64))
    out = tmp_path / "out"
    assert _convert("reid", src, out) == 0
    assert "skipped {'distractor': 1, 'junk_identity': 1}" in capsys.readouterr().out
    assert _convert("reid", src, out, "val") == 0
    assert "skipped {'distractor': 1, 'junk_identity': 1}" in capsys.readouterr().out
    tm = load_manifest(out).task("reid")
    assert tm.label_space == {"num_identities": 3, "identities": [2, 7, 1500]}
    train = sorted((a["identity"], a["camera"]) for a in _annotations(out, "reid", "train"))
    assert train == [(0, 1), (0, 2), (1, 3), (2, 6)]
    val = sorted((a["identity"], a["camera"]) for a in _annotations(out, "reid", "val"))
    assert val == [(1, 1), (1, 2), (3, 1), (3, 3)]  # original ids: compared by equality only
    _verified(out, capsys)


# --- insightface RecordIO ---------------------------------------------------------------------


def _record(payload: bytes, cflag: int = 0) -> bytes:
    head = struct.pack("<II", MAGIC, (cflag << 29) | len(payload))
    return head + payload + bytes(-len(payload) % 4)


def _image_payload(label: float | list[float], image: bytes, rec_id: int) -> bytes:
    if isinstance(label, list):
        head = struct.pack("<IfQQ", len(label), 0.0, rec_id, 0)
        return head + struct.pack(f"<{len(label)}f", *label) + image
    return struct.pack("<IfQQ", 0, float(label), rec_id, 0) + image


def _write_rec(folder: Path, records: list[tuple[int, bytes]]) -> None:
    """`train.rec` of (record id, record bytes) in order, and its `train.idx`."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets, data = [], b""
    for rec_id, raw in records:
        offsets.append(f"{rec_id}\t{len(data)}\n")
        data += raw
    (folder / "train.rec").write_bytes(data)
    (folder / "train.idx").write_text("".join(offsets))


def test_insightface_recordio_with_header_record(tmp_path: Path) -> None:
    """Record 0 is the header (labels: first identity record, end); records 1..5 are images of
    identities 0, 0, 1, 2, 2; records 6..8 list each identity's image range."""
    ids = [0, 0, 1, 2, 2]
    records = [(0, _record(_image_payload([6.0, 9.0], b"", 0)))]
    for r, identity in enumerate(ids, 1):
        label: float | list[float] = [float(identity), 7.0] if r == 3 else float(identity)
        records.append((r, _record(_image_payload(label, _jpeg_bytes(r), r))))
    for k, (a, b) in enumerate([(1, 3), (3, 4), (4, 6)]):
        records.append((6 + k, _record(_image_payload([float(a), float(b)], b"", 6 + k))))
    _write_rec(tmp_path / "ms1m", records)
    conv = LAYOUTS["face-rec"][0](tmp_path / "ms1m", None, "train")
    assert conv.label_space == {"num_identities": 3} and conv.dataset == "insightface"
    assert [identity for _, identity in conv.items] == ids
    members = conv.load(conv.items[2])
    assert members["jpg"] == _jpeg_bytes(3)  # the JPEG bytes after the 2 extra label floats
    assert json.loads(members["json"]) == {"width": 40, "height": 32, "identity": 1}
    out, out2 = tmp_path / "out", tmp_path / "out2"
    assert _convert("face-rec", tmp_path / "ms1m", out) == 0
    assert load_manifest(out).task("face").num_samples("train") == 5
    # Two processes, each opening the record file itself: the same two shards.
    assert _convert("face-rec", tmp_path / "ms1m", out2, "train", "--workers", "2") == 0
    tars = sorted(p.relative_to(out) for p in out.glob("face/train/*.tar"))
    assert len(tars) == 2
    assert all((out / t).read_bytes() == (out2 / t).read_bytes() for t in tars)


def test_recordio_without_header_and_multipart(tmp_path: Path) -> None:
    """No header record: every record is an image. Record 1's JPEG holds the magic word at an
    aligned position, so it is written in two parts (flags 1, 3) that read back joined."""
    jpg = _jpeg_bytes(1)
    payload = _image_payload(4.0, jpg + bytes(-len(jpg) % 4), 1)
    payload += struct.pack("<I", MAGIC) + b"tail"  # after the JPEG's end marker: ignored
    cut = len(payload) - 8
    assert cut % 4 == 0 and payload[cut : cut + 4] == struct.pack("<I", MAGIC)
    split = _record(payload[:cut], 1) + _record(payload[cut + 4 :], 3)
    records = [(0, _record(_image_payload(2.0, _jpeg_bytes(0), 0))), (1, split)]
    _write_rec(tmp_path / "glint", records)
    conv = LAYOUTS["face-rec"][0](tmp_path / "glint" / "train.rec", None, "train")
    assert [identity for _, identity in conv.items] == [2, 4]
    assert conv.label_space == {"num_identities": 5}
    assert conv.load(conv.items[1])["jpg"] == payload[24:]


def test_recordio_damage_is_named(tmp_path: Path) -> None:
    records = [(0, _record(_image_payload(0.0, _jpeg_bytes(0), 0)))]
    records.append((1, _record(_image_payload(1.0, _jpeg_bytes(1), 1), cflag=3)))
    _write_rec(tmp_path / "bad", records)
    with pytest.raises(ValueError, match=r"train.rec record 1: part flag 3"):
        LAYOUTS["face-rec"][0](tmp_path / "bad", None, "train")
    rec = tmp_path / "bad" / "train.rec"
    rec.write_bytes(b"\x00" * 8 + rec.read_bytes()[8:])
    with pytest.raises(ValueError, match=r"train.rec record 0: no RecordIO magic"):
        LAYOUTS["face-rec"][0](tmp_path / "bad", None, "train")
    (tmp_path / "bad" / "train.idx").write_text("0\t0\nnot a line\n")
    with pytest.raises(ValueError, match=r"train.idx:2"):
        LAYOUTS["face-rec"][0](tmp_path / "bad", None, "train")


# --- PA-100K and RAP .mat ---------------------------------------------------------------------


def _cells(values: list[str]) -> np.ndarray:
    """A MATLAB Nx1 cell array of strings, as scipy writes and reads them."""
    out = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        out[i, 0] = v
    return out


def test_pa100k_annotation_mat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "PA-100K"
    attrs = ["Female", "AgeOver60", "Hat"]
    mat: dict[str, object] = {"attributes": _cells(attrs)}
    for part, first, n in (("train", 1, 4), ("val", 80001, 2), ("test", 90001, 1)):
        names = [f"{first + i:06d}.jpg" for i in range(n)]
        for i, name in enumerate(names):
            _jpeg(src / "release_data" / "release_data" / name, first + i, (24, 48))
        labels = np.array([[(i + k) % 2 for k in range(3)] for i in range(n)], dtype=np.uint8)
        mat[f"{part}_images_name"], mat[f"{part}_label"] = _cells(names), labels
    scipy.io.savemat(src / "annotation.mat", mat)
    out = tmp_path / "out"
    assert _convert("pa100k", src, out) == 0
    assert _convert("pa100k", src, out, "val") == 0
    tm = load_manifest(out).task("attr")
    assert tm.label_space == {"attributes": attrs} and tm.dataset == "pa100k"
    assert (tm.num_samples("train"), tm.num_samples("val")) == (4, 1)  # val: the test part
    got = sorted(a["attributes"] for a in _annotations(out, "attr", "val"))
    assert got == [[0, 1, 0]]
    _verified(out, capsys)


def test_rap_annotation_struct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "RAP"
    names = [f"CAM01_2014-02-15_2014021511280{i}-2014021511290{i}_tarid1_frame{i}_line1.png"
             for i in range(5)]  # fmt: skip
    for i, name in enumerate(names):
        (src / "RAP_dataset").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 24, 3), 40 * i, dtype=np.uint8)).save(
            src / "RAP_dataset" / name
        )
    attrs = ["Femal", "AgeLess16", "hs-BaldHead", "ub-Shirt"]
    data = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 2, 1], [0, 0, 1, 1], [1, 1, 0, 0]])
    partition = np.empty((2, 1), dtype=object)
    partition[0, 0] = {"train_index": np.array([[1, 2, 3]]), "val_index": np.array([[4]]),
                       "test_index": np.array([[5]])}  # fmt: skip
    partition[1, 0] = {"train_index": np.array([[5]]), "val_index": np.array([[4]]),
                       "test_index": np.array([[1]])}  # fmt: skip
    ann = {"name": _cells(names), "attribute": _cells(attrs), "data": data.astype(np.float64),
           "selected_attribute": np.array([[1, 3, 4]]),
           "partition_attribute": partition}  # fmt: skip
    (src / "RAP_annotation").mkdir()
    scipy.io.savemat(src / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": ann})
    out = tmp_path / "out"
    assert _convert("rap", src, out) == 0
    assert "skipped {'uncertain_label': 1}" in capsys.readouterr().out  # row 3: a 2
    assert _convert("rap", src, out, "val") == 0
    tm = load_manifest(out).task("attr")
    assert tm.label_space == {"attributes": ["Femal", "hs-BaldHead", "ub-Shirt"]}
    train = sorted(a["attributes"] for a in _annotations(out, "attr", "train"))
    assert train == [[0, 0, 0], [1, 0, 1]]
    assert [a["attributes"] for a in _annotations(out, "attr", "val")] == [[0, 1, 1]]
    _verified(out, capsys)
