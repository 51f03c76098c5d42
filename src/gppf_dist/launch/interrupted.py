"""What gppf-train says after its workers were stopped by a signal: the step reached, the newest
complete checkpoint and the command that resumes; and the exit status.

SIGINT (Ctrl-C) ends with 130. SIGTERM (graceful preemption) ends with 0 when the workers wrote
the checkpoint of the step they stopped after (they printed `preempted: ...` themselves), else
with 128 + the signal's number, like any other signal.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
from pathlib import Path

from gppf_dist.checkpoint.layout import checkpoints_dir
from gppf_dist.checkpoint.manager import select_checkpoint, step_of_tag
from gppf_dist.launch.command import command_name


def last_step(run_dir: Path) -> int:
    """The last step `metrics.jsonl` records (0: none); a line torn mid-write is skipped."""
    path = run_dir / "metrics.jsonl"
    step = 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                step = max(step, int(json.loads(line).get("step", 0)))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue
    return step


def newest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint whose files have their recorded sizes (resume also checks
    their checksums), as (step, directory)."""
    ckpt_dir = checkpoints_dir(run_dir)
    try:
        tag = select_checkpoint(ckpt_dir, "auto", checksums=False).tag
    except ValueError:
        return None
    return (step_of_tag(tag), ckpt_dir / tag) if tag else None


def resume_command(argv: list[str]) -> str:
    """The command line as given, with `resume=` dropped (the default, auto, resumes)."""
    program = argv[0]
    if program.endswith(".py"):
        program = f"{Path(sys.executable).name} -m gppf_dist.cli.{Path(program).stem}"
    else:
        program = shlex.quote(program)
    kept = [a for a in argv[1:] if not a.lstrip("+~").startswith("resume=")]
    return " ".join([program, *map(shlex.quote, kept)])


def report(run_dir: Path, max_steps: int, sig: signal.Signals, argv: list[str]) -> int:
    """Print the few lines after an interruption; return the exit status."""
    reached = last_step(run_dir)
    newest = newest_checkpoint(run_dir)
    if sig == signal.SIGTERM and newest is not None and newest[0] == reached:
        return 0  # a graceful preemption: the workers said so
    where = f"after step {reached} of {max_steps}" if reached else "before the first step"
    if newest is None:
        saved = "no complete checkpoint yet: the run starts over"
    else:
        saved = f"newest complete checkpoint: step {newest[0]} ({newest[1]})"
    print(
        f"{command_name()}: {sig.name}: stopped {where}; {saved}.\n"
        f"resume with: {resume_command(argv)}",
        file=sys.stderr,
        flush=True,
    )
    return 130 if sig == signal.SIGINT else 128 + int(sig)
