"""Shard roots for tests: a copy of a root's manifest and offsets files over the same shards,
edited the way a user, another tool or a crash would leave them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gppf_dist.data.format.offsets import INDEX_DIR, index_name, read_index, write_index

Offsets = list[list[int]]


def edited_root(
    root: Path,
    where: Path,
    edit: Callable[[dict[str, Any]], None] | None = None,
    offsets: dict[tuple[str, str], Callable[[Offsets], None]] | None = None,
) -> Path:
    """A shard root `where` whose task folders link to `root`'s, with its own manifest.json
    (`edit` applied to the JSON) and offsets files (`offsets[(task, split)]` applied to that
    split's per-shard offsets). The manifest is written after the offsets files, with their
    new sizes, as `save_manifest` does."""
    where.mkdir()
    raw = json.loads((root / "manifest.json").read_text())
    for task in raw["tasks"]:
        (where / task).symlink_to(root / task)
    if (root / INDEX_DIR).is_dir():
        shutil.copytree(root / INDEX_DIR, where / INDEX_DIR)
    for (task, split), change in (offsets or {}).items():
        file = where / index_name(task, split)
        values = read_index(file)
        change(values)
        raw["tasks"][task]["offsets"][split]["bytes"] = write_index(file, values)
    if edit is not None:
        edit(raw)
    (where / "manifest.json").write_text(json.dumps(raw))
    return where


def without_offsets(raw: dict[str, Any]) -> None:
    """As a manifest written by another tool: no offsets files."""
    for task in raw["tasks"].values():
        task.pop("offsets", None)


def to_format_1(root: Path) -> None:
    """Rewrite `root` in place as the previous format stored it: each shard's offsets inside
    manifest.json, `schema_version` 1, no offsets files."""
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    for task in raw["tasks"].values():
        for split, entry in task.pop("offsets", {}).items():
            values = read_index(root / entry["path"])
            for shard, offsets in zip(task["splits"][split], values, strict=True):
                if offsets:
                    shard["offsets"] = offsets
    raw["schema_version"] = 1
    shutil.rmtree(root / INDEX_DIR, ignore_errors=True)
    path.write_text(json.dumps(raw, indent=2) + "\n")
