"""Checks task types share for their `json` member schema (`TaskType.check_annotation`).

Each raises ValueError naming the sample key, the field and the offending value, in the form
`sample 'k': `field`=value why`; `data.format.schema` wraps it into a skipped sample.
"""

from __future__ import annotations

from typing import Any


def annotation_error(key: str, field: str, value: Any, why: str) -> ValueError:
    """The error for `field`=`value` of sample `key` (the value cut to 80 characters)."""
    return ValueError(f"sample {key!r}: `{field}`={value!r:.80} {why}")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def label_count(label_space: dict[str, Any], field: str) -> int:
    """How many names the label space lists under `field` (0 when absent)."""
    return len(label_space.get(field, []))


def check_int(ann: dict[str, Any], key: str, field: str, lo: int = 0, hi: int | None = None) -> int:
    """`ann[field]`, which must be an int in [lo, hi) (no upper bound when `hi` is None)."""
    value = ann.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise annotation_error(key, field, value, "must be an integer")
    if value < lo or (hi is not None and value >= hi):
        raise annotation_error(
            key, field, value, f"must be in [{lo}, {hi if hi is not None else 'inf'})"
        )
    return value


def check_box(key: str, field: str, box: Any, width: int, height: int) -> None:
    """`box` must be [x1, y1, x2, y2] numbers with x1 < x2, y1 < y2 inside the image."""
    if not isinstance(box, list) or len(box) != 4 or not all(map(is_number, box)):
        raise annotation_error(key, field, box, "must be [x1, y1, x2, y2] numbers")
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise annotation_error(
            key, field, box, f"is not a box with x1 < x2, y1 < y2 inside {width}x{height}"
        )
