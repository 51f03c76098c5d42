"""The annotation (`json` member) and mask (`png` member) checks of a shard sample.

`check_annotation` is what `gppf-shards verify`, `inspect` and the converters apply to every
sample: the part every type shares (a JSON object whose `width`/`height` are the image's) here,
then the task type's own schema and bounds (`TaskType.check_annotation`: boxes and keypoints
inside the image, ids inside the label space; documented in shards/README.md and in each type's
module). Both raise `SampleError("annotation", ...)` naming the sample, the key and the
offending value; an unknown task type is a ValueError naming the known ones.
"""

from __future__ import annotations

from typing import Any

from gppf_dist.data.decode.sample import SampleError
from gppf_dist.tasks.common.annotation import annotation_error, check_int
from gppf_dist.tasks.registry import get_task_type


def check_annotation(
    task_type: str,
    key: str,
    ann: Any,
    label_space: dict[str, Any],
    width: int,
    height: int,
    split: str = "train",
) -> None:
    """Raise SampleError("annotation") unless `ann` matches `task_type`'s schema and bounds
    for a `width` x `height` image of `split` (re-ID and face bound identities by the label
    space in the train split only: eval splits hold unseen identities)."""
    checker = get_task_type(task_type)
    try:
        if not isinstance(ann, dict):
            raise annotation_error(key, "json", ann, "must be a JSON object")
        check_int(ann, key, "width", 1)
        check_int(ann, key, "height", 1)
        if (ann["width"], ann["height"]) != (width, height):
            size = (ann["width"], ann["height"])
            raise annotation_error(key, "width/height", size, f"!= {width}x{height}")
        checker.check_annotation(key, ann, label_space, width, height, split)
    except ValueError as err:
        raise SampleError("annotation", str(err)) from err


def check_mask(task_type: str, key: str, mask: Any, label_space: dict[str, Any]) -> None:
    """For a type that `needs_mask`: SampleError("missing_member") without a mask,
    SampleError("annotation") if it holds an id outside the label space. Nothing otherwise."""
    checker = get_task_type(task_type)
    if not checker.needs_mask:
        return
    if mask is None:
        raise SampleError("missing_member", f"sample {key!r}: no png mask member")
    try:
        checker.check_mask(key, mask, label_space)  # type: ignore[attr-defined]
    except ValueError as err:
        raise SampleError("annotation", str(err)) from err
