"""SIMT's DeepSpeed update equals the single-process update of J = sum_t w_t * mean loss_t.

Three toy tasks with different batch sizes and weights; the planner spreads them over 1, 2 and 3
ranks (so ranks run different tasks, or several in turn); after one real DeepSpeed step the
parameters must match a plain single-process reference.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from gppf_dist.simt.plan import TaskDemand, plan_static
from gppf_dist.tasks.base import Batch

from .harness import run_distributed

TASKS = {"a": (0.5, 8), "b": (1.0, 4), "c": (2.0, 12)}  # name: (weight, global batch)
STREAMS = 4


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(6, 5)
        self.heads = nn.ModuleDict({t: nn.Linear(5, 1) for t in TASKS})
        self.router = nn.Parameter(torch.randn(len(TASKS)))

    def forward(self, task: str, x: torch.Tensor) -> torch.Tensor:
        return self.heads[task](torch.tanh(self.shared(x.float()))).squeeze(1)

    def regularizer(self) -> torch.Tensor:
        return 0.1 * (self.router**2).sum()


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


def reference_params() -> dict[str, torch.Tensor]:
    model = ToyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    objective = model.regularizer()
    for task, (weight, _) in TASKS.items():
        x, y = task_data(task)
        objective = objective + weight * ((model(task, x) - y) ** 2).mean()
    objective.backward()
    opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def simt_step(zero_stage: int) -> dict[str, torch.Tensor]:
    import torch.distributed as dist

    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.engine.deepspeed import create_engine
    from gppf_dist.engine.step import TaskRuntime, run_iteration
    from gppf_dist.simt.objective import TaskWeights

    info = init_distributed("gloo", torch.device("cpu"), 60)
    model = ToyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg = RunConfig()
    cfg.trainer.grad_clip = 0.0
    cfg.parallel.zero_stage = zero_stage
    engine = create_engine(cfg, model, opt, sched, info.world_size, torch.device("cpu"))
    plan = plan_static(
        [TaskDemand(t, b, STREAMS, w) for t, (w, b) in TASKS.items()], info.world_size
    )
    runtimes: dict[str, TaskRuntime] = {}
    for i, (task, (weight, batch)) in enumerate(TASKS.items()):
        runtimes[task] = TaskRuntime(i, SquaredError(), TaskWeights(weight, batch))  # type: ignore[arg-type]
    for work in plan.rank_work(info.rank):
        runtimes[work.task].loader = iter([stream_batch(work.task, work.stream_ids)])
    run_iteration(engine, plan.rank_work(info.rank), runtimes, info.world_size, torch.device("cpu"))
    out = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    dist.destroy_process_group()
    return out


@pytest.mark.parametrize(("world", "zero_stage"), [(1, 0), (2, 0), (3, 0), (2, 1), (2, 2)])
def test_simt_update_equals_single_process_reference(world: int, zero_stage: int) -> None:
    expected = reference_params()
    results: list[Any] = run_distributed(simt_step, world, zero_stage)
    for rank_params in results:
        for name, value in expected.items():
            torch.testing.assert_close(rank_params[name], value, rtol=1e-5, atol=1e-6, msg=name)
