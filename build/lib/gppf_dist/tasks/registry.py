"""Task-type registry and `make_spec`, which reads a task's label space into a `TaskSpec`.

Label-space conventions per type: classification/detection/segmentation `{"classes": [...]}`;
pose `{"keypoints": [...], "skeleton": [...]}`; attributes `{"attributes": [...]}`;
reid/face `{"num_identities": int}`.
"""

from __future__ import annotations

from typing import Any

from gppf_dist.tasks.attributes import AttributesTask
from gppf_dist.tasks.base import TaskSpec, TaskType
from gppf_dist.tasks.classification import ClassificationTask
from gppf_dist.tasks.detection import DetectionTask
from gppf_dist.tasks.face import FaceTask
from gppf_dist.tasks.pose import PoseTask
from gppf_dist.tasks.reid import ReidTask
from gppf_dist.tasks.segmentation import SegmentationTask

TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in (
        ClassificationTask(),
        AttributesTask(),
        DetectionTask(),
        SegmentationTask(),
        PoseTask(),
        ReidTask(),
        FaceTask(),
    )
}

_LIST_KEY = {
    "classification": "classes",
    "detection": "classes",
    "segmentation": "classes",
    "pose": "keypoints",
    "attributes": "attributes",
}


def get_task_type(type_name: str) -> TaskType:
    """The registered task type called `type_name`."""
    if type_name not in TASK_TYPES:
        raise ValueError(f"task type {type_name!r} is unknown; known types: {sorted(TASK_TYPES)}")
    return TASK_TYPES[type_name]


def make_spec(
    name: str, type: str, input_size: tuple[int, int], label_space: dict[str, Any]
) -> TaskSpec:
    """A `TaskSpec` with the class/keypoint/attribute/identity count read from `label_space`."""
    get_task_type(type)
    if "." in name or not name:
        raise ValueError(f"task name {name!r} must be non-empty and contain no dots")
    size = tuple(input_size)
    if len(size) != 2 or any(not isinstance(v, int) or v < 8 for v in size):
        raise ValueError(f"`tasks.{name}.input_size`={input_size!r} must be two ints >= 8 (h, w)")
    counts = {"num_classes": 0, "num_keypoints": 0, "num_attributes": 0}
    if type in _LIST_KEY:
        key = _LIST_KEY[type]
        values = label_space.get(key)
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(
                f"`tasks.{name}.label_space.{key}`={values!r} must be a non-empty list "
                f"for task type {type!r}"
            )
        field = {"classes": "num_classes", "keypoints": "num_keypoints"}.get(key, "num_attributes")
        counts[field] = len(values)
    else:
        n = label_space.get("num_identities")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"`tasks.{name}.label_space.num_identities`={n!r} must be a positive int "
                f"for task type {type!r}"
            )
        counts["num_classes"] = n
    return TaskSpec(
        name=name,
        type=type,
        input_size=(int(size[0]), int(size[1])),
        label_space=dict(label_space),
        **counts,
    )
