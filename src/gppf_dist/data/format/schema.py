"""The annotation (`json` member) schema of each task type, as documented in shards/README.md.

`check_annotation` is what `gppf-shards verify` and the converters apply to every sample: the
structure of the README's JSON schema plus the bounds a reader relies on (boxes and keypoints
inside the image, ids inside the label space). It raises `SampleError("annotation", ...)` naming
the sample, the key and the offending value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gppf_dist.data.decode.sample import SampleError


def _fail(key: str, field: str, value: Any, why: str) -> SampleError:
    return SampleError("annotation", f"sample {key!r}: `{field}`={value!r:.80} {why}")


def _int(ann: dict[str, Any], key: str, field: str, lo: int = 0, hi: int | None = None) -> int:
    value = ann.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, field, value, "must be an integer")
    if value < lo or (hi is not None and value >= hi):
        raise _fail(key, field, value, f"must be in [{lo}, {hi if hi is not None else 'inf'})")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _box(key: str, field: str, box: Any, width: int, height: int) -> None:
    if not isinstance(box, list) or len(box) != 4 or not all(map(_number, box)):
        raise _fail(key, field, box, "must be [x1, y1, x2, y2] numbers")
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise _fail(key, field, box, f"is not a box with x1 < x2, y1 < y2 inside {width}x{height}")


def _names(label_space: dict[str, Any], field: str) -> int:
    return len(label_space.get(field, []))


def _check_detection(key: str, ann: dict[str, Any], ls: dict[str, Any], w: int, h: int) -> None:
    boxes, labels = ann.get("boxes"), ann.get("labels")
    if not isinstance(boxes, list):
        raise _fail(key, "boxes", boxes, "must be a list")
    if not isinstance(labels, list) or len(labels) != len(boxes):
        raise _fail(key, "labels", labels, f"must be a list of {len(boxes)} class ids")
    for i, box in enumerate(boxes):
        _box(key, f"boxes[{i}]", box, w, h)
        label = labels[i]
        if isinstance(label, bool) or not isinstance(label, int):
            raise _fail(key, f"labels[{i}]", label, "must be an integer")
        if not 0 <= label < _names(ls, "classes"):
            raise _fail(key, f"labels[{i}]", label, f"must be in [0, {_names(ls, 'classes')})")


def _check_pose(key: str, ann: dict[str, Any], ls: dict[str, Any], w: int, h: int) -> None:
    kps = ann.get("keypoints")
    n = _names(ls, "keypoints")
    if not isinstance(kps, list) or len(kps) != n:
        raise _fail(key, "keypoints", kps, f"must be a list of {n} [x, y, v] triples")
    for i, kp in enumerate(kps):
        if not isinstance(kp, list) or len(kp) != 3 or not all(map(_number, kp[:2])):
            raise _fail(key, f"keypoints[{i}]", kp, "must be [x, y, v]")
        x, y, v = kp
        if v not in (0, 1, 2) or isinstance(v, bool):
            raise _fail(key, f"keypoints[{i}]", kp, "must have visibility v in {0, 1, 2}")
        if v > 0 and not (0 <= x <= w and 0 <= y <= h):
            raise _fail(key, f"keypoints[{i}]", kp, f"is outside the {w}x{h} image")
    _box(key, "box", ann.get("box"), w, h)


def _check_attributes(key: str, ann: dict[str, Any], ls: dict[str, Any], w: int, h: int) -> None:
    attrs = ann.get("attributes")
    n = _names(ls, "attributes")
    ok = isinstance(attrs, list) and len(attrs) == n
    if not ok or any(isinstance(a, bool) or a not in (0, 1) for a in attrs):  # type: ignore[union-attr]
        raise _fail(key, "attributes", attrs, f"must be a list of {n} values 0/1")


def check_annotation(
    task_type: str,
    key: str,
    ann: Any,
    label_space: dict[str, Any],
    width: int,
    height: int,
    split: str = "train",
) -> None:
    """Raise SampleError("annotation") unless `ann` matches `task_type`'s schema and bounds.

    Re-ID and face identities are bounded by `num_identities` in the train split only: eval
    splits hold unseen identities (compared by equality, never classified)."""
    if not isinstance(ann, dict):
        raise _fail(key, "json", ann, "must be a JSON object")
    _int(ann, key, "width", 1)
    _int(ann, key, "height", 1)
    if (ann["width"], ann["height"]) != (width, height):
        raise _fail(key, "width/height", (ann["width"], ann["height"]), f"!= {width}x{height}")
    if task_type == "classification":
        _int(ann, key, "label", 0, _names(label_space, "classes"))
    elif task_type == "detection":
        _check_detection(key, ann, label_space, width, height)
    elif task_type == "pose":
        _check_pose(key, ann, label_space, width, height)
    elif task_type == "attributes":
        _check_attributes(key, ann, label_space, width, height)
    elif task_type in ("reid", "face"):
        bound = label_space.get("num_identities") if split == "train" else None
        _int(ann, key, "identity", 0, bound)
        if task_type == "reid":
            _int(ann, key, "camera", 0)
    elif task_type != "segmentation":
        raise ValueError(f"task type {task_type!r} has no annotation schema")


def check_mask(key: str, mask: Any, label_space: dict[str, Any]) -> None:
    """Raise SampleError("annotation") if a segmentation mask holds an id outside `classes`."""
    if mask is None:
        raise SampleError("missing_member", f"sample {key!r}: no png mask member")
    n = _names(label_space, "classes")
    ids = set(np.unique(mask).tolist()) - {255}
    bad = sorted(i for i in ids if i >= n)
    if bad:
        raise _fail(key, "png", bad, f"mask ids must be < {n} classes or 255")
