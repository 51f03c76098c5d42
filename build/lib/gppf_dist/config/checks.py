"""The one rule-check of the config dataclasses: a ValueError naming the key and the value."""

from __future__ import annotations


def check(ok: bool, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ValueError(f"`{key}`={value!r}: {rule}")
