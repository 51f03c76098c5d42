"""Task-type registry and `make_spec`, which reads a task's label space into a `TaskSpec`.

A task type registers itself once per process with `register_task_type`: the built-in ones
below, a user's own from the file or module that defines it, imported through `plugins=[...]`
(`config/plugins.py`) before a run's configuration is checked. Everything else looks a type up
by name with `get_task_type`.
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

TASK_TYPES: dict[str, TaskType] = {}
"""Every registered task type by name; add to it with `register_task_type` only."""


def register_task_type(task_type: TaskType) -> TaskType:
    """Make `task_type` known under its `name`; ValueError if that name is taken."""
    name = getattr(task_type, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"task type {task_type!r}: `name`={name!r} must be a non-empty string")
    if name in TASK_TYPES:
        raise ValueError(
            f"task type {name!r} is already registered ({type(TASK_TYPES[name]).__qualname__}); "
            "pick another name"
        )
    TASK_TYPES[name] = task_type
    return task_type


for _builtin in (
    ClassificationTask(),
    AttributesTask(),
    DetectionTask(),
    SegmentationTask(),
    PoseTask(),
    ReidTask(),
    FaceTask(),
):
    register_task_type(_builtin)


def get_task_type(type_name: str) -> TaskType:
    """The registered task type called `type_name`."""
    if type_name not in TASK_TYPES:
        raise ValueError(
            f"task type {type_name!r} is unknown; known types: {sorted(TASK_TYPES)} (a type of "
            "your own is loaded with `plugins=[path/to/file.py]`)"
        )
    return TASK_TYPES[type_name]


def make_spec(
    name: str, type: str, input_size: tuple[int, int], label_space: dict[str, Any]
) -> TaskSpec:
    """A `TaskSpec` with the class/keypoint/attribute/identity count read from `label_space`."""
    task_type = get_task_type(type)
    if "." in name or not name:
        raise ValueError(f"task name {name!r} must be non-empty and contain no dots")
    size = tuple(input_size)
    if len(size) != 2 or any(not isinstance(v, int) or v < 8 for v in size):
        raise ValueError(f"`tasks.{name}.input_size`={input_size!r} must be two ints >= 8 (h, w)")
    try:
        counts = task_type.label_counts(label_space)
    except ValueError as err:
        why = str(err)  # names `label_space.<key>`: made the key path of this task
        why = f"`tasks.{name}.{why[1:]}" if why.startswith("`label_space.") else why
        raise ValueError(f"{why} for task type {type!r}") from err
    return TaskSpec(
        name=name,
        type=type,
        input_size=(int(size[0]), int(size[1])),
        label_space=dict(label_space),
        **counts,
    )
