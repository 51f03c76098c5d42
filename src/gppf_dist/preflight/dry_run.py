"""`simt.dry_run=true`: print the task-to-rank plan, predicted loads and (with
`trainer.device_memory_gib`) every rank's predicted peak memory, then one JSON line; start no
worker.

Uses the measured cost table of the newest complete checkpoint in run.dir when there is one
(it is kept in the checkpoint's COMPLETE marker), else the config's cost hints. Before the corpus
exists, the label spaces come from the corpus spec (`data.spec`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from gppf_dist.checkpoint.layout import checkpoints_dir
from gppf_dist.checkpoint.manager import find_latest
from gppf_dist.checkpoint.marker import read_marker
from gppf_dist.config.schema import RunConfig
from gppf_dist.model.memory import GIB
from gppf_dist.preflight.memory_plan import MemoryPlan, gib
from gppf_dist.simt.costs import CostTable
from gppf_dist.simt.plan import HINT_UNIT, MEASURED_UNIT
from gppf_dist.simt.taskset import TaskSet


def saved_costs(cfg: RunConfig) -> tuple[CostTable, str | None]:
    """The cost table of the newest complete checkpoint in run.dir, and its tag."""
    ckpt_dir = checkpoints_dir(cfg.run.dir)
    tag = find_latest(ckpt_dir)
    marker = read_marker(ckpt_dir / tag) if tag is not None else None
    return CostTable.from_state(marker.costs if marker is not None else None), tag


def describe_plan(
    cfg: RunConfig, world_size: int, taskset: TaskSet, memory: MemoryPlan | None = None
) -> tuple[str, dict[str, Any]]:
    """The plan as text, and the summary the dry run prints as its last line (JSON)."""
    costs, tag = saved_costs(cfg)
    measured = costs.complete(taskset.names)
    source = f"costs measured up to {tag}" if measured else "config cost hints"
    plan = taskset.plan(costs, world_size)
    demands = taskset.demands(costs if measured else None)
    overhead = taskset.overhead(costs)
    unit = MEASURED_UNIT if measured else HINT_UNIT
    static = cfg.simt.planner == "static"
    caps = {n: t.max_local_batch for n, t in taskset.active.items()}
    peaks = memory.rank_peaks(plan, caps) if memory is not None else None
    notes = [f"peak {gib(p)} GiB" for p in peaks] if peaks is not None else None
    text = f"planner={cfg.simt.planner} ({source})\n" + plan.describe(
        demands, overhead, unit, whole_streams=static, rank_notes=notes
    )
    efficiency = plan.balance_efficiency(demands, overhead)
    text += _caps_note(taskset, costs, world_size, efficiency)
    if memory is not None and peaks is not None:
        text += "\n" + _memory_note(cfg, memory, caps, peaks)
    summary = {
        "world": world_size,
        "idle_ranks": plan.idle_ranks(),
        "efficiency": round(efficiency, 4),
        "read_amplification": round(plan.read_amplification(demands), 4),
        "peak_mem_gib_max": round(max(peaks) / GIB, 3) if peaks else None,
        "max_local_batch": {n: c for n, c in caps.items() if c},
        "planner": cfg.simt.planner,
        "costs": "measured" if measured else "hints",
    }
    return text, summary


def print_dry_run(text: str, summary: dict[str, Any]) -> None:
    print(text, flush=True)
    print(json.dumps(summary, sort_keys=True), flush=True)


def _memory_note(cfg: RunConfig, memory: MemoryPlan, caps: dict[str, int], peaks: list[int]) -> str:
    st = memory.state
    lines = [
        f"  memory plan (trainer.device_memory_gib={cfg.trainer.device_memory_gib:g}, usable "
        f"{gib(memory.usable)} GiB after trainer.memory_margin={cfg.trainer.memory_margin:g}): "
        f"state {gib(st.total)} GiB per rank (parameters {gib(st.params)}, gradients "
        f"{gib(st.grads)}, optimizer {gib(st.optimizer)}); predicted peak per rank "
        f"{gib(min(peaks))}..{gib(max(peaks))} GiB",
    ]
    for task, line in memory.activations.items():
        lines.append(
            f"    {task}: activations {gib(line.fixed)} + {line.per_sample / 2**20:.1f} MiB per "
            f"sample; max_local_batch {caps[task]} (fits {memory.fits(task)})"
        )
    return "\n".join(lines)


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
