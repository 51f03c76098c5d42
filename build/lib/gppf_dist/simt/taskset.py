"""The active tasks of a run and the planning policy: which planner, on which costs.

Every rank builds the same `TaskSet` (tasks in the config's sorted order), so every rank derives
the same plan from the same inputs (DESIGN.md §5.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gppf_dist.config.schema import RunConfig, TaskSection
from gppf_dist.simt.costs import CostTable
from gppf_dist.simt.divisible import plan_divisible
from gppf_dist.simt.plan import Affinity, Plan, TaskDemand, plan_static
from gppf_dist.tasks.base import TaskSpec, TaskType
from gppf_dist.tasks.registry import get_task_type, make_spec


@dataclass
class TaskSet:
    """The active tasks of a run, in the fixed (sorted) order every rank shares."""

    cfg: RunConfig
    active: dict[str, TaskSection]
    specs: dict[str, TaskSpec]
    types: dict[str, TaskType]

    @classmethod
    def build(cls, cfg: RunConfig, label_spaces: dict[str, dict[str, Any]]) -> TaskSet:
        """`label_spaces`: each task's label space, from its shard manifest."""
        active = cfg.simt.active_tasks()
        specs = {
            name: make_spec(name, t.type, (t.input_size[0], t.input_size[1]), label_spaces[name])
            for name, t in active.items()
        }
        return cls(cfg, active, specs, {n: get_task_type(t.type) for n, t in active.items()})

    @property
    def names(self) -> list[str]:
        return list(self.active)

    @property
    def input_sizes(self) -> dict[str, tuple[int, int]]:
        return {n: (t.input_size[0], t.input_size[1]) for n, t in self.active.items()}

    @property
    def batch_sizes(self) -> dict[str, int]:
        return {n: t.batch_size for n, t in self.active.items()}

    def group(self, name: str) -> int:
        """The samples task `name`'s loss couples (one stream's share), or 1."""
        t = self.active[name]
        coupled = self.types[name].couples_samples
        return t.batch_size // self.cfg.data.streams_per_task if coupled else 1

    def demands(self, costs: CostTable | None = None) -> list[TaskDemand]:
        """Planner inputs; per-sample costs measured if `costs` has them, else the config hints."""
        out = []
        streams = self.cfg.data.streams_per_task
        for name, t in self.active.items():
            cost = costs.cost(name) if costs is not None else None
            out.append(
                TaskDemand(
                    name,
                    t.batch_size,
                    streams,
                    t.weight,
                    cost_per_sample=t.cost if cost is None else cost,
                    every=t.every,
                    granularity=self.group(name),
                    max_local_batch=t.max_local_batch,
                )
            )
        return out

    def plan(
        self, costs: CostTable, world_size: int, affinity: dict[str, list[float]] | None = None
    ) -> Plan:
        """static: by batch size. cost: on measured seconds/sample once every task has one (with
        the per-task overhead and lego locality), before that on the config's cost hints."""
        if self.cfg.simt.planner == "static":
            return plan_static(self.demands(None), world_size)
        measured = costs.complete(self.names)
        demands = self.demands(costs if measured else None)
        return make_plan(
            "cost", demands, world_size, self.overhead(costs), affinity if measured else None
        )

    def overhead(self, costs: CostTable) -> float:
        """The per-(rank, task) overhead the planner uses with `costs`."""
        if costs.complete(self.names):
            return self.cfg.simt.task_overhead_s
        return hint_overhead(self.demands())


def make_plan(
    mode: str,
    demands: list[TaskDemand],
    world_size: int,
    overhead: float = 0.0,
    affinity: Affinity | None = None,
) -> Plan:
    """`simt.planner`: static (whole streams by batch size) or cost (sample slices)."""
    if mode == "static":
        return plan_static(demands, world_size)
    if mode == "cost":
        return plan_divisible(demands, world_size, overhead, affinity)
    raise ValueError(f"`simt.planner`={mode!r} must be static or cost")


def hint_overhead(demands: list[TaskDemand]) -> float:
    """Per-(rank, task) overhead in hint units: 5% of an average task's batch cost, so tasks are
    only split when that buys real balance."""
    return 0.05 * sum(d.cost for d in demands) / len(demands)
