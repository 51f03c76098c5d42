"""The streamed COCO reader keeps exactly the rows the converters need, grouped by image in the
file's order, and names the file when it is not COCO-style JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gppf_dist.data.convert.layouts.coco_json import read_coco_tables

ANNOTATIONS = [  # interleaved across images, as real files are not
    {"id": 7, "image_id": 20, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0},
    {"id": 2, "image_id": 10, "category_id": 5, "bbox": [5.5, 6, 7, 8], "iscrowd": 1},
    {"id": 9, "image_id": 20, "category_id": 5, "bbox": [0, 0, 9, 9], "area": 81},
    {"id": 4, "image_id": 10, "category_id": 3, "bbox": [1, 1, 2], "iscrowd": 0},  # 3 numbers
    {
        "id": 5,
        "image_id": 30,
        "category_id": 1,
        "bbox": [2, 3, 10, 20],
        "num_keypoints": 2,
        "keypoints": [4, 5, 2, 6, 7, 1, 0, 0, 0],
        "segmentation": [[1, 2, 3, 4, 5, 6]],
    },
    {"id": 6, "image_id": 10, "category_id": 3, "bbox": [3, 3, 3, 3]},
]


def _write(tmp: Path, anns: list) -> Path:
    data = {
        "info": {"year": 2017},
        "images": [
            {"id": i, "file_name": f"{i:012d}.jpg", "width": 64, "height": 48} for i in (30, 10, 20)
        ],
        "annotations": anns,
        "categories": [{"id": 5, "name": "b"}, {"id": 3, "name": "a"}, {"id": 1, "name": "p"}],
    }
    path = tmp / "instances_train2017.json"
    path.write_text(json.dumps(data))
    return path


def _expected(path: Path) -> dict[int, list[dict]]:
    """What reading the whole tree gives: the usable annotations of each image, file order."""
    data = json.loads(path.read_text())
    out: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if len(a["bbox"]) == 4:
            out.setdefault(a["image_id"], []).append(a)
    return out


def test_stream_matches_the_whole_tree(tmp_path: Path) -> None:
    path = _write(tmp_path, ANNOTATIONS)
    t = read_coco_tables(path, keypoints=True)
    assert t.image_ids.tolist() == [10, 20, 30]
    assert t.file_names == ["000000000010.jpg", "000000000020.jpg", "000000000030.jpg"]
    assert [c["name"] for c in t.categories] == ["b", "a", "p"]
    assert t.skipped == {"bad_annotation": 1}
    expected = _expected(path)
    for i, image_id in enumerate(t.image_ids.tolist()):
        rows = t.rows(i)
        want = expected[image_id]
        assert t.ann_id[rows].tolist() == [a["id"] for a in want]
        assert t.ann_cat[rows].tolist() == [a["category_id"] for a in want]
        assert t.ann_bbox[rows].tolist() == [[float(v) for v in a["bbox"]] for a in want]
        assert t.ann_crowd[rows].tolist() == [a.get("iscrowd", 0) for a in want]
    person = t.rows(2)
    assert t.ann_num_kp[person].tolist() == [2]
    assert t.ann_kps is not None
    np.testing.assert_array_equal(t.ann_kps[person][0], [4, 5, 2, 6, 7, 1, 0, 0, 0])
    assert t.ann_kps[t.rows(0)].sum() == 0  # no keypoints: zeros, num_keypoints 0


def test_not_coco_json_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, ANNOTATIONS)
    cut = tmp_path / "cut.json"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="cannot read COCO JSON .*cut.json"):
        read_coco_tables(cut)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="empty.json: no `images` entries"):
        read_coco_tables(empty)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [7]}))
    with pytest.raises(ValueError, match="bad.json: category entry must be an object"):
        read_coco_tables(bad)
