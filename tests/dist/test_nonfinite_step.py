"""A NaN planted in one task's loss at one step: on 2 gloo ranks, at ZeRO 0, 1 and 2 and with
expert parallelism, that step changes no parameter (and, at ZeRO 0, no optimizer state: the
fused AdamW reads the device-side `found_inf`), reports `update_skipped`, and the next clean
step trains again. The engine is the real one, with the default optimizer (`optim.py`)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from .harness import run_distributed

TASKS = ["attr", "cls_object"]
BATCH, STREAMS = 4, 2


class _Poisoned:
    """A task type whose loss is NaN while `poison[0]` is set (the real type otherwise)."""

    def __init__(self, inner: Any, poison: list[bool]) -> None:
        self.inner, self.poison = inner, poison

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        loss = self.inner.loss(outputs, targets, groups)
        return loss * float("nan") if self.poison[0] else loss


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _adam_state(engine: Any) -> list[torch.Tensor]:
    optimizer = engine.optimizer
    return [
        v.detach().clone()
        for p in (p for g in optimizer.param_groups for p in g["params"])
        for v in optimizer.state.get(p, {}).values()
        if torch.is_tensor(v)
    ]


def steps(zero_stage: int, ep_size: int) -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.config.model import ModelConfig
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.engine.assemble import assemble_step
    from gppf_dist.engine.step import TaskRuntime, run_iteration
    from gppf_dist.model.build import build_model
    from gppf_dist.simt.objective import TaskWeights
    from gppf_dist.simt.plan import TaskDemand, plan_static
    from gppf_dist.tasks.base import Batch
    from gppf_dist.tasks.demo import demo_specs, synthetic_batch
    from gppf_dist.tasks.registry import get_task_type

    info = init_distributed("gloo", torch.device("cpu"), 60)
    specs = {t: s for t, s in demo_specs().items() if t in TASKS}
    torch.manual_seed(0)
    model = build_model(ModelConfig(), specs)
    cfg = RunConfig()
    cfg.parallel.zero_stage, cfg.parallel.ep_size = zero_stage, ep_size
    cfg.trainer.max_steps, cfg.trainer.warmup_steps = 10, 1
    poison = [False]
    runtimes = {
        t: TaskRuntime(
            i,
            _Poisoned(get_task_type(specs[t].type), poison) if t == "cls_object" else
            get_task_type(specs[t].type),
            TaskWeights(1.0, BATCH),
        )
        for i, t in enumerate(TASKS)
    }  # fmt: skip
    plan = plan_static([TaskDemand(t, BATCH, STREAMS) for t in TASKS], info.world_size)
    loaders = {}
    for work in plan.rank_work(info.rank):
        images, targets = synthetic_batch(
            specs[work.task], work.local_batch, torch.Generator().manual_seed(len(work.task))
        )
        groups = torch.zeros(work.local_batch, dtype=torch.long)
        batch = Batch(task=work.task, images=images, targets=targets, groups=groups, keys=[])
        loaders[work.task] = itertools.repeat(batch)
    sizes = {t: tuple(s.input_size) for t, s in specs.items()}
    assembled = assemble_step(
        cfg, model, runtimes, sizes, loaders,
        rank=info.rank, world_size=info.world_size, device=torch.device("cpu"),
    )  # fmt: skip
    engine, module = assembled.engine, assembled.engine.module
    out: dict[str, Any] = {"norms": []}
    for step in range(3):
        poison[0] = step == 1
        module.set_step(step)
        before, state = _params(module), _adam_state(engine)
        result = run_iteration(assembled.ctx, plan, set(TASKS))
        after = _params(module)
        out["norms"].append(result.grad_norm)
        changed = [n for n in after if not torch.equal(after[n], before[n])]
        out[f"changed{step}"] = changed
        if step == 1:
            out["losses"] = result.task_loss_sums.tolist()
            out["state_kept"] = all(
                torch.equal(a, b) for a, b in zip(state, _adam_state(engine), strict=True)
            )
    dist.destroy_process_group()
    return out


@pytest.mark.parametrize(("zero_stage", "ep_size"), [(0, 1), (0, 2), (1, 1), (2, 1), (1, 2)])
def test_a_nan_loss_changes_nothing_that_step(zero_stage: int, ep_size: int) -> None:
    for out in run_distributed(steps, 2, zero_stage, ep_size):
        clean, poisoned, after = out["norms"]
        assert clean == clean and after == after  # finite steps around it
        assert not (poisoned == poisoned and abs(poisoned) != float("inf"))  # NaN or inf
        assert out["changed0"] and out["changed2"]  # clean steps train
        assert out["changed1"] == []  # the poisoned step changed no parameter
        assert out["losses"][0] == out["losses"][0]  # attr's loss stayed finite
        assert out["losses"][1] != out["losses"][1]  # cls_object's was NaN
        if zero_stage == 0:
            assert out["state_kept"]  # moments and step counts untouched too
