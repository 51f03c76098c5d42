"""`simt.dry_run=true`: print the task-to-rank plan and predicted loads, start no worker.

Uses the measured cost table of the newest complete checkpoint in run.dir when there is one
(it is kept in the checkpoint's COMPLETE marker), else the config's cost hints.
"""

from __future__ import annotations

from pathlib import Path

from gppf_dist.checkpoint.manager import find_latest
from gppf_dist.checkpoint.marker import read_marker
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.manifest import load_manifest
from gppf_dist.simt.costs import CostTable
from gppf_dist.simt.taskset import TaskSet


def describe_plan(cfg: RunConfig, world_size: int) -> str:
    manifest = load_manifest(Path(cfg.data.root))
    taskset = TaskSet.build(cfg, manifest.label_spaces())
    ckpt_dir = Path(cfg.run.dir) / "checkpoints"
    tag = find_latest(ckpt_dir)
    marker = read_marker(ckpt_dir / tag) if tag is not None else None
    costs = CostTable.from_state(marker.costs if marker is not None else None)
    measured = costs.complete(taskset.names)
    source = f"costs measured up to {tag}" if measured else "config cost hints"
    plan = taskset.plan(costs, world_size)
    demands = taskset.demands(costs if measured else None)
    return f"planner={cfg.simt.planner} ({source})\n" + plan.describe(
        demands, taskset.overhead(costs)
    )
