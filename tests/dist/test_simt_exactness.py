"""SIMT's update equals the single-process update of J = sum_t w_t * mean loss_t.

Three toy tasks with different batch sizes and weights; the planner spreads them over 1–4 ranks
(so ranks run different tasks, or several in turn, and some tasks are absent from some ranks);
after one real DeepSpeed step with AdamW and weight decay, the parameters must match a plain
single-process reference. A task absent from the whole step (`every`) must leave its head, its
optimizer state and its weights untouched.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from gppf_dist.model.owners import SHARED, OwnerMap, task_owner
from gppf_dist.simt.plan import TaskDemand, plan_static, present_tasks
from gppf_dist.tasks.base import Batch

from .harness import run_distributed

TASKS = {"a": (0.5, 8), "b": (1.0, 4), "c": (2.0, 12)}  # name: (weight, global batch)
STREAMS = 4
LR, DECAY = 0.05, 0.1


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(6, 5)
        self.heads = nn.ModuleDict({t: nn.Linear(5, 1) for t in TASKS})

    def forward(self, task: str, x: torch.Tensor) -> torch.Tensor:
        return self.heads[task](torch.tanh(self.shared(x.float()))).squeeze(1)

    def regularizer(self) -> torch.Tensor:
        return 0.1 * (self.shared.bias**2).sum()

    def active_legos(self, task: str) -> set[tuple[int, int]]:
        return set()  # no legos

    def param_owners(self) -> OwnerMap:
        return OwnerMap(
            {
                name: task_owner(name.split(".")[1]) if name.startswith("heads.") else SHARED
                for name, _ in self.named_parameters()
            }
        )


class SquaredError:
    def loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor
    ) -> torch.Tensor:
        return (outputs - targets) ** 2


def task_data(task: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(ord(task))
    batch = TASKS[task][1]
    return torch.randn(batch, 6, generator=g), torch.randn(batch, generator=g)


def stream_batch(task: str, stream_ids: tuple[int, ...]) -> Batch:
    x, y = task_data(task)
    per = TASKS[task][1] // STREAMS
    idx = torch.cat([torch.arange(s * per, (s + 1) * per) for s in stream_ids])
    return Batch(task=task, images=x[idx], targets=y[idx], groups=torch.zeros(len(idx)), keys=[])


def demands(absent: str | None) -> list[TaskDemand]:
    return [
        TaskDemand(t, b, STREAMS, w, every=2 if t == absent else 1) for t, (w, b) in TASKS.items()
    ]


def reference(present: set[str]) -> dict[str, torch.Tensor]:
    model = ToyModel()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=DECAY)
    objective = model.regularizer()
    for task, (weight, _) in TASKS.items():
        if task in present:
            x, y = task_data(task)
            objective = objective + weight * ((model(task, x) - y) ** 2).mean()
    objective.backward()
    for name, p in model.named_parameters():
        if name.startswith("heads.") and name.split(".")[1] not in present:
            p.grad = None  # an absent task's parameters are not stepped at all
    opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def simt_step(zero_stage: int, absent: str | None, step: int) -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.engine.assemble import assemble_step
    from gppf_dist.engine.step import TaskRuntime, run_iteration
    from gppf_dist.simt.objective import TaskWeights

    info = init_distributed("gloo", torch.device("cpu"), 60)
    model = ToyModel()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg = RunConfig()
    cfg.trainer.grad_clip = 0.0
    cfg.parallel.zero_stage = zero_stage
    plan = plan_static(demands(absent), info.world_size)
    present = present_tasks(demands(absent), step)
    runtimes: dict[str, TaskRuntime] = {}
    for i, (task, (weight, batch)) in enumerate(TASKS.items()):
        runtimes[task] = TaskRuntime(i, SquaredError(), TaskWeights(weight, batch))  # type: ignore[arg-type]
    works = plan.rank_work(info.rank)
    loaders = {w.task: iter([stream_batch(w.task, w.stream_ids)]) for w in works}
    assembled = assemble_step(
        cfg, model, runtimes, {}, loaders,
        rank=info.rank, world_size=info.world_size, device=torch.device("cpu"),
        optimizers=lambda _model, _select: (opt, sched),
    )  # fmt: skip
    engine = assembled.engine
    run_iteration(assembled.ctx, plan, present)
    params = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    stepped = {
        name for name, p in engine.module.named_parameters() if opt.state.get(p, {}).get("step")
    }
    dist.destroy_process_group()
    return {"params": params, "stepped": stepped, "present": present}


@pytest.mark.parametrize(("world", "zero_stage"), [(1, 0), (2, 0), (3, 0), (4, 0), (2, 1), (2, 2)])
def test_simt_update_equals_single_process_reference(world: int, zero_stage: int) -> None:
    expected = reference(set(TASKS))
    for result in run_distributed(simt_step, world, zero_stage, None, 0):
        for name, value in expected.items():
            torch.testing.assert_close(
                result["params"][name], value, rtol=1e-5, atol=1e-6, msg=name
            )


@pytest.mark.parametrize("world", [2, 4])
def test_absent_task_is_untouched(world: int) -> None:
    # Task "b" runs every 2nd step: at step 1 it is absent from every rank.
    initial = {k: v.clone() for k, v in ToyModel().state_dict().items()}
    expected = reference({"a", "c"})
    for result in run_distributed(simt_step, world, 0, "b", 1):
        assert result["present"] == {"a", "c"}
        for name, value in expected.items():
            torch.testing.assert_close(
                result["params"][name], value, rtol=1e-5, atol=1e-6, msg=name
            )
        for name in ("heads.b.weight", "heads.b.bias"):
            assert torch.equal(result["params"][name], initial[name])  # no decay, no moments
            assert name not in result["stepped"]  # no optimizer state was created for it
        assert "heads.a.weight" in result["stepped"]
