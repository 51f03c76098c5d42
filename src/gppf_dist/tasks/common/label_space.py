"""Label-space readers task types share (`TaskType.label_counts`, `placeholder_label_space`).

A label space is the manifest's per-task object: a list of names under one key (`classes`,
`keypoints`, `attributes`) or a count (`num_identities`). The errors name the key and the value;
`tasks.registry.make_spec` adds the task.
"""

from __future__ import annotations

from typing import Any


def count_names(label_space: dict[str, Any], key: str) -> int:
    """The length of the non-empty list `label_space[key]`."""
    values = label_space.get(key)
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"`label_space.{key}`={values!r:.80} must be a non-empty list")
    return len(values)


def count_value(label_space: dict[str, Any], key: str) -> int:
    """The positive int `label_space[key]`."""
    n = label_space.get(key)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`label_space.{key}`={n!r:.80} must be a positive int")
    return n


def generic_names(prefix: str, n: int) -> list[str]:
    """`prefix_0` ... `prefix_{n-1}`: names for a label space planned before its data exists."""
    return [f"{prefix}_{i}" for i in range(n)]
