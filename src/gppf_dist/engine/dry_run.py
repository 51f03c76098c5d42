"""`simt.dry_run=true`: print the task-to-rank plan and predicted loads, start no worker.

Uses the measured cost table of the newest complete checkpoint in run.dir when there is one
(it is kept in the checkpoint's COMPLETE marker), else the config's cost hints.
"""

from __future__ import annotations

import json
from pathlib import Path

from gppf_dist.checkpoint.manager import COMPLETE, find_latest
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.manifest import load_manifest
from gppf_dist.engine.runtime import TaskSet, hint_overhead
from gppf_dist.simt.costs import CostTable


def describe_plan(cfg: RunConfig, world_size: int) -> str:
    taskset = TaskSet.build(cfg, load_manifest(Path(cfg.data.root)))
    ckpt_dir = Path(cfg.run.dir) / "checkpoints"
    tag = find_latest(ckpt_dir)
    costs = CostTable()
    source = "config cost hints"
    if tag is not None:
        info = json.loads((ckpt_dir / tag / COMPLETE).read_text())
        costs = CostTable.from_state(info.get("costs"))
        if costs.complete(taskset.names):
            source = f"costs measured up to {tag}"
    plan = taskset.plan(costs, world_size)
    demands = taskset.demands(costs if costs.complete(taskset.names) else None)
    measured = costs.complete(taskset.names)
    overhead = cfg.simt.task_overhead_s if measured else hint_overhead(demands)
    return f"planner={cfg.simt.planner} ({source})\n" + plan.describe(demands, overhead)
