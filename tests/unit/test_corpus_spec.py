"""The shipped corpus spec loads and plans every task; a broken spec names its file and key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gppf_dist.data.convert.corpus_spec import SPEC_DIR, SpecTask, load_corpus_spec
from gppf_dist.data.convert.readers import LAYOUTS
from gppf_dist.tasks.reference import COCO_KEYPOINTS
from gppf_dist.tasks.registry import make_spec

TASKS = {  # task -> (type, num_labels)
    "cls_object": ("classification", 1000),
    "cls_scene": ("classification", 365),
    "det": ("detection", 80),
    "seg": ("segmentation", 150),
    "pose": ("pose", 17),
    "reid": ("reid", 751),
    "face": ("face", 85742),
    "attr": ("attributes", 26),
}


def test_shipped_spec_loads() -> None:
    spec = load_corpus_spec("gppf15m")
    assert spec.name == "gppf15m" and spec.path == SPEC_DIR / "gppf15m.yaml"
    assert {n: (t.type, t.num_labels) for n, t in spec.tasks.items()} == TASKS
    for task in spec.tasks.values():
        assert task.datasets[0].task == task.name  # the primary converts into the task itself
        for data in task.datasets:
            assert data.layout in LAYOUTS and data.samples > 0 and "train" in data.splits
            assert data.task == task.name or data.task == f"{task.name}_{data.name}"
    names = [d.name for d in spec.datasets()]
    assert {"imagenet1k", "objects365", "msmt17", "cuhk03", "ms1m_arcface", "rap"} <= set(names)
    assert len(names) == len(set(names)) == len({d.task for d in spec.datasets()})


def test_shipped_spec_plans_every_task() -> None:
    spaces = load_corpus_spec("gppf15m").planning_label_spaces()
    assert list(spaces) == list(TASKS)
    for name, (type_, n) in TASKS.items():
        spec = make_spec(name, type_, (64, 64), spaces[name])
        counted = spec.num_classes or spec.num_keypoints or spec.num_attributes
        assert counted == n, name
    assert spaces["pose"]["keypoints"] == COCO_KEYPOINTS
    assert all(0 <= i < 17 and 0 <= j < 17 for i, j in spaces["pose"]["skeleton"])
    assert spaces["face"] == {"num_identities": 85742}


def test_pose_of_another_count_gets_generic_names() -> None:
    space = SpecTask("pose_aic", "pose", 14, ()).planning_label_space()
    assert space == {"keypoints": [f"keypoint_{i}" for i in range(14)], "skeleton": []}
    assert make_spec("pose_aic", "pose", (64, 48), space).num_keypoints == 14


def _shipped() -> dict[str, Any]:
    return yaml.safe_load((SPEC_DIR / "gppf15m.yaml").read_text())


def _load(tmp_path: Path, raw: dict[str, Any]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    load_corpus_spec(str(path))


def test_a_spec_by_path(tmp_path: Path) -> None:
    raw = _shipped()
    raw["tasks"] = {"reid": raw["tasks"]["reid"]}
    del raw["name"]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    spec = load_corpus_spec(str(tmp_path / "mine.yaml"))
    assert spec.name == "mine" and list(spec.tasks) == ["reid"]
    assert [d.task for d in spec.datasets()] == ["reid", "reid_msmt17", "reid_cuhk03"]
    with pytest.raises(ValueError, match=r"'gppf99m' is not a shipped spec \(known: \[.*gppf15m"):
        load_corpus_spec("gppf99m")
    with pytest.raises(ValueError, match=r"nope.yaml does not exist"):
        load_corpus_spec(str(tmp_path / "nope.yaml"))


def _set(raw: dict[str, Any], keys: str, value: Any) -> None:
    *path, last = keys.split("/")
    node: Any = raw
    for key in path:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value


BROKEN = [  # (key path, new value or None to delete, expected message)
    ("tasks/det/datasets/1/layout", "coco-json",
     r"broken.yaml: `tasks.det.datasets\[1\].layout` is not a known layout .known: .*coco-det"),
    ("tasks/seg/type", "panoptic",
     r"`tasks.seg.type` is not a known task type \(known: \[.*'segmentation'"),
    ("tasks/reid/datasets/2/task", "reid_msmt17",
     r"`tasks.reid.datasets\[2\].task` is also the manifest task of `tasks.reid.datasets\[1\]`"),
    ("tasks/attr/datasets/0/samples", None,
     r"`tasks.attr.datasets\[0\]` is missing key\(s\) \['samples'\]"),
    ("tasks/face/num_labels", None, r"`tasks.face` is missing key\(s\) \['num_labels'\]"),
    ("tasks/det/datasets/1/task", "objects365",
     r"`tasks.det.datasets\[1\].task` must be `det_<dataset>`"),
    ("tasks/det/datasets/0/task", "det_coco",
     r"`tasks.det.datasets\[0\].task` must be 'det': the primary"),
    ("tasks/pose/datasets/0/layout", "coco-det",
     r"`tasks.pose.datasets\[0\].layout` makes detection samples, not task 'pose'"),
    ("tasks/cls_scene/datasets/0/splits/test", {"src": "test"},
     r"`tasks.cls_scene.datasets\[0\].splits` has unknown split\(s\) \['test'\]"),
    ("tasks/cls_object/datasets/0/splits/train/src", "/data/imagenet/train",
     r"`tasks.cls_object.datasets\[0\].splits.train.src` must be a path relative"),
    ("tasks/face/num_labels", 0, r"`tasks.face.num_labels` must be an integer >= 1, got 0"),
    ("tasks/face/datasets/0/sample", 5, r"`tasks.face.datasets\[0\]` has unknown key\(s\) \['sa"),
    ("tasks/reid/datasets/1/name", "market1501",
     r"`tasks.reid.datasets\[1\].name` names a dataset listed before"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "value", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_spec_names_file_and_key(
    tmp_path: Path, keys: str, value: Any, message: str
) -> None:
    raw = copy.deepcopy(_shipped())
    _set(raw, keys, value)
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, raw)


def test_not_yaml_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("tasks: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML"):
        load_corpus_spec(str(tmp_path / "bad.yaml"))
