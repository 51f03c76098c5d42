"""The worker's building blocks: the task set and its plans, loaders, RNG and step records.

Kept apart from `worker.py` so the entry point reads top to bottom.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gppf_dist.config.schema import RunConfig, TaskSection
from gppf_dist.data.loader import TaskLoader
from gppf_dist.data.manifest import Manifest
from gppf_dist.engine.prefetch import DevicePrefetcher
from gppf_dist.engine.step import StepResult, TaskRuntime
from gppf_dist.simt.costs import CostTable
from gppf_dist.simt.objective import TaskWeights
from gppf_dist.simt.plan import Plan, TaskDemand, Work, make_plan, plan_static
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
    def build(cls, cfg: RunConfig, manifest: Manifest) -> TaskSet:
        active = cfg.simt.active_tasks()
        specs = {
            name: make_spec(
                name, t.type, (t.input_size[0], t.input_size[1]), manifest.tasks[name].label_space
            )
            for name, t in active.items()
        }
        return cls(cfg, active, specs, {n: get_task_type(t.type) for n, t in active.items()})

    @property
    def names(self) -> list[str]:
        return list(self.active)

    def demands(self, costs: CostTable | None = None) -> list[TaskDemand]:
        """Planner inputs; per-sample costs measured if `costs` has them, else the config hints."""
        out = []
        for name, t in self.active.items():
            cost = costs.cost(name) if costs is not None else None
            out.append(
                TaskDemand(
                    name,
                    t.batch_size,
                    self.cfg.data.streams_per_task,
                    t.weight,
                    cost_per_sample=t.cost if cost is None else cost,
                    every=t.every,
                )
            )
        return out

    def plan(
        self, costs: CostTable, world_size: int, affinity: dict[str, list[float]] | None = None
    ) -> Plan:
        return plan_for(self.cfg, self.demands, costs, world_size, affinity)

    def runtimes(self) -> dict[str, TaskRuntime]:
        return {
            name: TaskRuntime(i, self.types[name], TaskWeights(t.weight, t.batch_size))
            for i, (name, t) in enumerate(self.active.items())
        }


def plan_for(
    cfg: RunConfig,
    demands: Callable[[CostTable | None], list[TaskDemand]],
    costs: CostTable,
    world_size: int,
    affinity: dict[str, list[float]] | None = None,
) -> Plan:
    """static: by batch size. cost: on measured seconds/sample once every task has one (with
    the per-task overhead and lego locality), before that on the config's relative cost hints."""
    simt = cfg.simt
    if simt.planner == "static":
        return plan_static(demands(None), world_size)
    if costs.complete(list(simt.active_tasks())):
        return make_plan("cost", demands(costs), world_size, simt.task_overhead_s, affinity)
    return make_plan("cost", demands(None), world_size, hint_overhead(demands(None)))


def hint_overhead(demands: list[TaskDemand]) -> float:
    """Per-(rank, task) overhead in hint units: 5% of an average task's batch cost, so tasks are
    only split when that buys real balance."""
    return 0.05 * sum(d.cost for d in demands) / len(demands)


def build_loaders(
    cfg: RunConfig,
    taskset: TaskSet,
    manifest: Manifest,
    plan: Plan,
    rank: int,
    runtimes: dict[str, TaskRuntime],
    positions: dict[str, dict[Any, Any]],
    device: torch.device,
) -> None:
    """A loader for each task this rank runs under `plan`, starting at the saved positions;
    its batches arrive on `device` a step ahead (`prefetch.py`)."""
    for work in plan.rank_work(rank):
        saved = {int(k): v for k, v in positions.get(work.task, {}).items()}
        loader = TaskLoader(
            root=Path(cfg.data.root),
            manifest=manifest,
            task=work.task,
            spec=taskset.specs[work.task],
            task_type=taskset.types[work.task],
            num_streams=cfg.data.streams_per_task,
            stream_ids=list(work.stream_ids),
            per_stream_batch=work.local_batch // len(work.stream_ids),
            seed=cfg.trainer.seed,
            train=True,
            start_positions={s: saved[s] for s in work.stream_ids if s in saved} or None,
            num_workers=cfg.data.num_workers,
        )
        runtimes[work.task].loader = DevicePrefetcher(loader, device, cfg.trainer.channels_last)


def local_positions(
    plan: Plan, rank: int, runtimes: dict[str, TaskRuntime]
) -> dict[str, dict[int, Any]]:
    """This rank's per-stream data positions (where the next step starts)."""
    out = {}
    for work in plan.rank_work(rank):
        loader = runtimes[work.task].loader
        assert loader is not None
        out[work.task] = loader.positions()  # type: ignore[attr-defined]
    return out


def close_loaders(runtimes: dict[str, TaskRuntime]) -> None:
    for runtime in runtimes.values():
        close = getattr(runtime.loader, "close", None)
        if close is not None:
            close()
        runtime.loader = None


def active_legos(model: nn.Module, task: str) -> set[tuple[int, int]]:
    """(layer, lego id) pairs task `task` routes to at the model's current step."""
    route = model.router.route(task)  # type: ignore[operator, union-attr]
    return {(layer, int(i)) for layer, ids in enumerate(route.indices) for i in ids}


def plan_to_state(plan: Plan) -> dict[str, Any]:
    return asdict(plan)


def plan_from_state(state: dict[str, Any] | None, world_size: int) -> Plan | None:
    """The saved plan, if it was made for this world size (else the caller re-plans)."""
    if not state or state["world_size"] != world_size:
        return None
    per_rank = tuple(
        tuple(Work(w["task"], tuple(w["stream_ids"]), w["local_batch"]) for w in works)
        for works in state["per_rank"]
    )
    return Plan(world_size, per_rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict[str, Any] | None) -> None:
    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def step_record(
    done: int, result: StepResult, taskset: TaskSet, present: set[str], step_s: float, lr: float
) -> dict[str, Any]:
    """One metrics.jsonl line (and W&B log) for a finished step."""
    names = taskset.names
    batch = torch.tensor([t.batch_size for t in taskset.active.values()], dtype=torch.float64)
    weights = torch.tensor([t.weight for t in taskset.active.values()], dtype=torch.float64)
    mask = torch.tensor([n in present for n in names], dtype=torch.bool)
    means = result.task_loss_sums / batch
    objective = float((means * weights)[mask].sum()) + result.regularizer
    busy = result.rank_busy_s
    record: dict[str, Any] = {
        "step": done,
        "loss": objective,
        **{f"loss/{n}": float(means[i]) for i, n in enumerate(names) if n in present},
        "loss/router_reg": result.regularizer,
        "lr": lr,
        "grad_norm": result.grad_norm,
        "samples_per_s": float(batch[mask].sum()) / step_s,
        **{
            f"samples_per_s/{n}": float(batch[i]) / step_s
            for i, n in enumerate(names)
            if n in present
        },
        **{  # of the previous step (see StepResult.task_seconds)
            f"cost_ms/{n}": 1e3 * float(result.task_seconds[i]) / float(batch[i])
            for i, n in enumerate(names)
            if float(result.task_seconds[i]) > 0
        },
        **{f"data/skipped/{n}": int(result.skipped[i]) for i, n in enumerate(names)},
        "time/step_s": step_s,
        "time/data_s": result.data_s,
        "balance_efficiency": float(busy.mean() / busy.max()) if float(busy.max()) > 0 else 1.0,
        **{f"busy_s/rank{r}": float(b) for r, b in enumerate(busy)},
    }
    local, remote = result.lego_calls
    if local + remote > 0:  # expert parallelism: share of lego calls the requesting rank served
        record["ep/local_fraction"] = local / (local + remote)
    return record
