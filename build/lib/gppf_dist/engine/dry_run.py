"""`simt.dry_run=true`: print the task-to-rank plan and predicted loads, start no worker.

Uses the measured cost table of the newest complete checkpoint in run.dir when there is one
(it is kept in the checkpoint's COMPLETE marker), else the config's cost hints.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gppf_dist.checkpoint.manager import find_latest
from gppf_dist.checkpoint.marker import read_marker
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.manifest import load_manifest
from gppf_dist.simt.costs import CostTable
from gppf_dist.simt.plan import HINT_UNIT, MEASURED_UNIT
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
    overhead = taskset.overhead(costs)
    unit = MEASURED_UNIT if measured else HINT_UNIT
    static = cfg.simt.planner == "static"
    text = f"planner={cfg.simt.planner} ({source})\n" + plan.describe(
        demands, overhead, unit, whole_streams=static
    )
    efficiency = plan.balance_efficiency(demands, overhead)
    return text + _caps_note(taskset, costs, world_size, efficiency)


def _caps_note(taskset: TaskSet, costs: CostTable, world_size: int, efficiency: float) -> str:
    """A line when memory caps (`max_local_batch`) cost balance: the efficiency without them."""
    capped = [n for n, t in taskset.active.items() if t.max_local_batch]
    if not capped:
        return ""
    active = {n: replace(t, max_local_batch=0) for n, t in taskset.active.items()}
    uncapped = replace(taskset, active=active)
    demands = uncapped.demands(costs if costs.complete(taskset.names) else None)
    best = uncapped.plan(costs, world_size).balance_efficiency(demands, uncapped.overhead(costs))
    if efficiency >= best - 0.005:
        return ""
    keys = ", ".join(f"simt.tasks.{n}.max_local_batch" for n in capped)
    return (
        f"\n  memory caps ({keys}) lower the predicted balance efficiency from {best:.3f} to "
        f"{efficiency:.3f}: each micro-batch pays the per-task overhead"
    )
