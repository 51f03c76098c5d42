"""Checkpoint bookkeeping: complete markers, an atomic LATEST pointer, retention, lookup.

DeepSpeed writes the tensors (collectively, every rank). A checkpoint counts only once every rank
has finished writing: rank 0 then writes `<tag>/COMPLETE` and atomically replaces `LATEST`.
A crash mid-save leaves a tag without COMPLETE, which lookup ignores, so the previous checkpoint
stays the one that resumes (DESIGN.md §5.6).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from gppf_dist.checkpoint.marker import COMPLETE

LATEST = "LATEST"
_TAG = re.compile(r"^step_(\d{8})$")


def tag_for_step(step: int) -> str:
    return f"step_{step:08d}"


def step_of_tag(tag: str) -> int:
    match = _TAG.match(tag)
    if not match:
        raise ValueError(f"`resume`={tag!r} is not a checkpoint tag of the form step_00000123")
    return int(match.group(1))


def is_complete(ckpt_dir: Path, tag: str) -> bool:
    return (ckpt_dir / tag / COMPLETE).is_file()


def mark_complete(ckpt_dir: Path, tag: str, info: dict[str, object]) -> None:
    """Rank 0, after every rank finished writing `tag`."""
    marker = ckpt_dir / tag / COMPLETE
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, sort_keys=True) + "\n")
    tmp.replace(marker)
    latest_tmp = ckpt_dir / (LATEST + ".tmp")
    latest_tmp.write_text(tag + "\n")
    latest_tmp.replace(ckpt_dir / LATEST)


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Complete checkpoints, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    tags = [
        p.name for p in ckpt_dir.iterdir() if _TAG.match(p.name) and is_complete(ckpt_dir, p.name)
    ]
    return sorted(tags, key=step_of_tag)


def find_latest(ckpt_dir: Path) -> str | None:
    """The newest complete checkpoint: LATEST if it points at one, else a scan."""
    pointer = ckpt_dir / LATEST
    if pointer.is_file():
        tag = pointer.read_text().strip()
        if _TAG.match(tag) and is_complete(ckpt_dir, tag):
            newer = [t for t in complete_tags(ckpt_dir) if step_of_tag(t) > step_of_tag(tag)]
            return newer[-1] if newer else tag
    tags = complete_tags(ckpt_dir)
    return tags[-1] if tags else None


def resume_tag(ckpt_dir: Path, resume: str) -> str | None:
    """The checkpoint tag that `resume` (auto/never/tag) picks in `ckpt_dir`, if any."""
    if resume == "never":
        return None
    return find_latest(ckpt_dir) if resume == "auto" else resume


def prune(ckpt_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete checkpoints, and incomplete ones older than
    the newest complete one (leftovers of crashed saves). Rank 0 only."""
    tags = complete_tags(ckpt_dir)
    removed = tags[:-keep] if len(tags) > keep else []
    if tags:
        newest = step_of_tag(tags[-1])
        for p in ckpt_dir.iterdir():
            m = _TAG.match(p.name)
            if m and int(m.group(1)) < newest and not is_complete(ckpt_dir, p.name):
                removed.append(p.name)
    for tag in removed:
        shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
    return removed
