"""Which checkpoint a start resumes from, verified once, with the ranks sharing the reading.

Rank 0 walks the complete checkpoints newest first, comparing sizes only (a stat per file): a
checkpoint whose sizes differ from its marker is damaged without reading a byte. The first that
passes is then checksummed in shares, every rank reading its part (`digest.share_of`), and the
ranks' findings are gathered: intact, it is the one; damaged, the next one is tried. So a
restart reads each byte of the checkpoint it loads once across the whole job, not once per
rank, and the launcher and `validate_run` check sizes only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from gppf_dist.checkpoint.digest import FileRecord, share_of
from gppf_dist.checkpoint.manager import complete_tags, step_of_tag
from gppf_dist.checkpoint.marker import read_marker
from gppf_dist.checkpoint.verify import Verdict, checksum_problems, verify_checkpoint


def _candidates(
    ckpt_dir: Path, resume: str
) -> tuple[list[tuple[str, dict[str, FileRecord] | None]], list[Verdict]]:
    """Rank 0: the checkpoints to checksum in order (with their records; None: an old marker
    without them) and those whose sizes already failed."""
    tags = [resume] if resume != "auto" else list(reversed(complete_tags(ckpt_dir)))
    if resume != "auto":
        step_of_tag(resume)
    candidates: list[tuple[str, dict[str, FileRecord] | None]] = []
    damaged: list[Verdict] = []
    for tag in tags:
        verdict = verify_checkpoint(ckpt_dir / tag, checksums=False)
        if verdict.intact:
            marker = read_marker(ckpt_dir / tag)
            candidates.append((tag, marker.files if marker is not None else None))
        else:
            damaged.append(verdict)
    return candidates, damaged


def select_resume(ckpt_dir: Path, resume: str) -> str | None:
    """Collective: the checkpoint `resume` (auto/never/tag) loads, checksummed once in shares.
    With auto a damaged newer one is skipped with a warning naming its file (rank 0 prints it);
    every rank raises the same ValueError when the tag asked for, or every checkpoint, is
    damaged."""
    if resume == "never":
        return None
    plan: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            plan[0] = (*_candidates(ckpt_dir, resume), None)
        except (ValueError, OSError) as err:
            plan[0] = ([], [], str(err))
    dist.broadcast_object_list(plan, src=0)
    candidates, damaged, refusal = plan[0]
    if refusal is not None:
        raise ValueError(refusal)
    rank, world = dist.get_rank(), dist.get_world_size()
    chosen = None
    for tag, records in candidates:
        mine: list[str] = []
        if records is not None:
            share = share_of({n: r.size for n, r in records.items()}, rank, world)
            mine = checksum_problems(ckpt_dir / tag, {n: records[n] for n in share})
        found: list[Any] = [None] * world
        dist.all_gather_object(found, mine)
        problems = tuple(sorted(p for part in found for p in part))
        if not problems:
            chosen = tag
            break
        damaged.append(Verdict(tag, problems, True))
    if resume != "auto" and chosen is None and damaged:
        verdict = damaged[0]
        raise ValueError(
            f"`resume`={resume!r}: checkpoint {str(ckpt_dir / resume)!r} is damaged: "
            f"{'; '.join(verdict.problems)} (resume=auto picks the newest intact one)"
        )
    damaged.sort(key=lambda v: v.tag, reverse=True)  # newest first, as they were tried
    if chosen is None and damaged:
        found_all = "; ".join(f"{v.tag}: {', '.join(v.problems)}" for v in damaged)
        raise ValueError(
            f"no intact checkpoint in {str(ckpt_dir)!r} to resume from ({found_all}); "
            "start over with another `run.dir` (or move the damaged checkpoints away)"
        )
    if rank == 0:  # the damaged ones the resume skipped: newer than the one it loads
        skipped = [v for v in damaged if chosen is None or v.tag > chosen]
        _report(chosen, skipped, records=dict(candidates).get(chosen) if chosen else None)
    return chosen


def _report(chosen: str | None, damaged: list[Verdict], records: Any) -> None:
    """Rank 0: the damaged checkpoints a resume skipped, and a checkpoint it could not verify."""
    for verdict in damaged:
        problems = "; ".join(verdict.problems)
        print(
            f"warning: checkpoint {verdict.tag} is damaged ({problems}); "
            f"resuming from {chosen} instead",
            file=sys.stderr,
            flush=True,
        )
    if chosen is not None and records is None:
        print(
            f"note: checkpoint {chosen} has a marker without a file list (saved before "
            "checksums were recorded): it cannot be verified",
            file=sys.stderr,
            flush=True,
        )
