"""Checkpoint bookkeeping: complete markers, an atomic LATEST pointer, retention, lookup.

DeepSpeed writes the tensors (collectively, every rank). A checkpoint counts only once every rank
has finished writing: rank 0 then writes `<tag>/COMPLETE` and atomically replaces `LATEST`.
A crash mid-save leaves a tag without COMPLETE, which lookup ignores, so the previous checkpoint
stays the one that resumes (DESIGN.md §5.6).

A run's checkpoints live in `checkpoints_dir(run.dir)` (every name: `layout.py`). Lookup
(`select_checkpoint`, the one rule for "newest", which `find_latest` and every tool use)
picks the newest *intact* complete checkpoint: one whose files still match the sizes and
checksums its marker records (`verify.py`, DESIGN.md §5.8). The choice is a pure function of
the files, so every process that looks (the launcher's checks, rank 0's restore, the tools) agrees.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from gppf_dist.checkpoint.layout import COMPLETE, LATEST, TAG
from gppf_dist.checkpoint.verify import Verdict, verify_checkpoint

_TAG = TAG


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


def step_tags(ckpt_dir: Path) -> list[str]:
    """Every checkpoint directory, complete or not, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted((p.name for p in ckpt_dir.iterdir() if _TAG.match(p.name)), key=step_of_tag)


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Complete checkpoints, oldest first."""
    return [tag for tag in step_tags(ckpt_dir) if is_complete(ckpt_dir, tag)]


@dataclass(frozen=True)
class Selection:
    """The checkpoint a resume loads, and the newer complete ones skipped as damaged."""

    tag: str | None
    chosen: Verdict | None
    damaged: tuple[Verdict, ...] = ()


def select_checkpoint(ckpt_dir: Path, resume: str, *, checksums: bool = True) -> Selection:
    """What `resume` (auto/never/tag) loads from `ckpt_dir`: with auto, the newest intact
    complete checkpoint. Raises ValueError when checkpoints exist but none is intact, or when
    the tag asked for is damaged."""
    if resume == "never":
        return Selection(None, None)
    if resume != "auto":
        step_of_tag(resume)
        verdict = verify_checkpoint(ckpt_dir / resume, checksums=checksums)
        if not verdict.intact:
            raise ValueError(
                f"`resume`={resume!r}: checkpoint {str(ckpt_dir / resume)!r} is damaged: "
                f"{'; '.join(verdict.problems)} (resume=auto picks the newest intact one)"
            )
        return Selection(resume, verdict)
    damaged: list[Verdict] = []
    for tag in reversed(complete_tags(ckpt_dir)):
        verdict = verify_checkpoint(ckpt_dir / tag, checksums=checksums)
        if verdict.intact:
            return Selection(tag, verdict, tuple(damaged))
        damaged.append(verdict)
    if damaged:
        found = "; ".join(f"{v.tag}: {', '.join(v.problems)}" for v in damaged)
        raise ValueError(
            f"no intact checkpoint in {str(ckpt_dir)!r} to resume from ({found}); "
            "start over with another `run.dir` (or move the damaged checkpoints away)"
        )
    return Selection(None, None)


def find_latest(ckpt_dir: Path) -> str | None:
    """The newest intact complete checkpoint (None when there is no complete one)."""
    return select_checkpoint(ckpt_dir, "auto").tag


def resume_tag(ckpt_dir: Path, resume: str) -> str | None:
    """The checkpoint tag that `resume` (auto/never/tag) picks in `ckpt_dir`, if any."""
    return select_checkpoint(ckpt_dir, resume).tag


def prune(ckpt_dir: Path, keep: int, upto: int | None = None) -> list[str]:
    """Delete all but the newest `keep` complete checkpoints up to step `upto`, and incomplete
    ones older than the newest of those (leftovers of crashed saves). Rank 0 only.

    Newer checkpoints than `upto` belong to a run that resumed from an older one after finding
    them damaged: they are neither counted nor deleted (the save of their step replaces them)."""
    tags = [t for t in complete_tags(ckpt_dir) if upto is None or step_of_tag(t) <= upto]
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
