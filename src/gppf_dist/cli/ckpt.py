"""`gppf-ckpt`: a run's checkpoints, checked offline against their COMPLETE markers.

gppf-ckpt verify RUN_DIR               # sizes and SHA-256 of every file of every checkpoint
gppf-ckpt verify RUN_DIR --sizes-only  # sizes only (a stat per file)

Prints one row per checkpoint (step, files, bytes, ok or what is damaged) and which one a
resume would load; exits 1 when the newest complete checkpoint is damaged, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gppf_dist.checkpoint.layout import checkpoints_dir
from gppf_dist.checkpoint.manager import is_complete, step_of_tag, step_tags
from gppf_dist.checkpoint.verify import Verdict, verify_checkpoint
from gppf_dist.cli.usage import examples


def _status(verdict: Verdict, complete: bool) -> str:
    if not complete:
        return "incomplete (no COMPLETE marker: a save that did not finish; never resumed)"
    if verdict.problems:
        return "DAMAGED: " + "; ".join(verdict.problems)
    return "ok" if verdict.verified else "ok? (marker has no file list: cannot be verified)"


def format_table(rows: list[tuple[Verdict, bool]]) -> str:
    lines = [f"{'step':>10}  {'files':>5}  {'bytes':>13}  status"]
    for verdict, complete in rows:
        files = str(verdict.files) if verdict.verified else "?"
        size = f"{verdict.bytes:,}" if verdict.verified else "?"
        lines.append(
            f"{step_of_tag(verdict.tag):>10}  {files:>5}  {size:>13}  {_status(verdict, complete)}"
        )
    return "\n".join(lines)


def verify_run(run_dir: Path, *, checksums: bool) -> int:
    """Print the table for `run_dir`; the exit status (1: the newest complete one is damaged)."""
    ckpt_dir = checkpoints_dir(run_dir)
    if not ckpt_dir.is_dir():
        raise ValueError(f"`RUN_DIR`={str(run_dir)!r} has no checkpoints folder ({ckpt_dir})")
    tags = step_tags(ckpt_dir)
    rows = [(verify_checkpoint(ckpt_dir / t, checksums=checksums), is_complete(ckpt_dir, t))
            for t in tags]  # fmt: skip
    print(format_table(rows))
    complete = [verdict for verdict, done in rows if done]
    intact = [verdict for verdict in complete if verdict.intact]
    if intact:
        print(f"resume=auto loads {intact[-1].tag}")
    elif complete:
        print("no intact checkpoint: a resume would refuse to start")
    else:
        print("no complete checkpoint: a run would start from scratch")
    return 1 if complete and not complete[-1].intact else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gppf-ckpt",
        description=__doc__.splitlines()[0],
        **examples("gppf-ckpt verify runs/demo", "gppf-ckpt verify runs/demo --sizes-only"),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="check every checkpoint of a run",
        description=__doc__.split("\n\n")[2],
        **examples("gppf-ckpt verify runs/demo", "gppf-ckpt verify runs/demo --sizes-only"),
    )
    verify.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (run.dir)")
    verify.add_argument("--sizes-only", action="store_true", help="skip the checksums")
    args = parser.parse_args(argv)
    try:
        return verify_run(Path(args.run_dir), checksums=not args.sizes_only)
    except ValueError as exc:
        print(f"gppf-ckpt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
