"""A memory cap below the group a loss couples: re-ID's triplet loss couples the samples of one
stream's share (8 here); capped at 2 samples per forward, its share runs in embed and replay
passes (`engine/replay.py`). One real SIMT iteration on 2 gloo ranks, with and without expert
parallelism, under SIMT's reduction and ZeRO 1, equals the single-process update with the whole
batch in one forward. Under expert parallelism the embed passes exchange lego activations too
(with zero gradients), so the EP group's exchanges stay in lockstep; a rank whose peer embeds
while it trains would hang or mismatch sizes, not pass.

SGD, so the update is -lr x the clipped gradient: a per-micro-batch triplet loss (groups cut in
half, no positive pairs left), a gradient counted twice, or a dropped replay all change it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from .harness import run_distributed
from .sgd import clipped_sgd_update

TASKS = {"reid": 1.0, "attr": 0.5}  # name: weight
BATCH, STREAMS, CAP = 16, 2, 2
LR, CLIP = 0.1, 0.5


def _setup() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from gppf_dist.config.model import ModelConfig
    from gppf_dist.model.build import build_model
    from gppf_dist.tasks.demo import demo_specs, synthetic_batch

    specs = {t: s for t, s in demo_specs().items() if t in TASKS}
    torch.manual_seed(0)
    model = build_model(ModelConfig(), specs)
    model.set_step(0)
    gen = torch.Generator().manual_seed(3)
    data = {t: synthetic_batch(specs[t], BATCH, gen) for t in TASKS}
    # Pairs of one identity, so every triplet group of the stream shares has positives.
    data["reid"][1]["identity"] = torch.arange(BATCH) // 2
    return model, specs, data


def _groups() -> torch.Tensor:
    return torch.arange(BATCH) // (BATCH // STREAMS)


def _rows(tree: Any, lo: int, hi: int) -> Any:
    if torch.is_tensor(tree):
        return tree[lo:hi]
    return {k: _rows(v, lo, hi) for k, v in tree.items()}


def reference() -> dict[str, Any]:
    """J on one process, every task's batch in one forward; every parameter takes part."""
    from gppf_dist.tasks.registry import get_task_type

    model, specs, data = _setup()
    objective = model.regularizer()
    for task, weight in TASKS.items():
        images, targets = data[task]
        per_sample = get_task_type(specs[task].type).loss(model(task, images), targets, _groups())
        objective = objective + weight * per_sample.mean()
    return clipped_sgd_update(model, objective, LR, CLIP)


def simt_step(zero_stage: int, ep_size: int) -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.engine.assemble import assemble_step
    from gppf_dist.engine.step import TaskRuntime, run_iteration
    from gppf_dist.simt.divisible import plan_divisible
    from gppf_dist.simt.objective import TaskWeights
    from gppf_dist.simt.plan import TaskDemand
    from gppf_dist.tasks.base import Batch
    from gppf_dist.tasks.registry import get_task_type

    info = init_distributed("gloo", torch.device("cpu"), 60)
    model, specs, data = _setup()
    cfg = RunConfig()
    cfg.parallel.zero_stage, cfg.parallel.ep_size, cfg.trainer.grad_clip = zero_stage, ep_size, CLIP
    cfg.model.num_legos = 4

    def sgd(module: torch.nn.Module, select: Any) -> Any:
        params = [p for n, p in module.named_parameters() if select is None or select(n)]
        optimizer = torch.optim.SGD(params, lr=LR)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    group = {"reid": BATCH // STREAMS, "attr": 1}
    demands = [
        TaskDemand(t, BATCH, STREAMS, w, granularity=group[t], max_local_batch=CAP)
        for t, w in TASKS.items()
    ]
    # Equal costs: rank 0 runs reid (8 embed, then 8 replay micro-steps), rank 1 attr (8
    # micro-steps, then 8 idle ones serving rank 0's lego calls).
    plan = plan_divisible(demands, info.world_size)
    runtimes = {
        t: TaskRuntime(i, get_task_type(specs[t].type), TaskWeights(w, BATCH), CAP, group[t])
        for i, (t, w) in enumerate(TASKS.items())
    }
    loaders = {}
    for work in plan.rank_work(info.rank):
        images, targets = data[work.task]
        start = work.stream_ids[0] * (BATCH // STREAMS) + work.offset
        parts = []
        for lo in range(start, start + work.local_batch, CAP):  # what a capped loader yields
            hi = min(lo + CAP, start + work.local_batch)
            rows = _rows(targets, lo, hi)
            groups = _groups()[lo:hi]
            parts.append(
                Batch(task=work.task, images=images[lo:hi], targets=rows, groups=groups, keys=[])
            )
        loaders[work.task] = iter(parts)
    sizes = {t: tuple(s.input_size) for t, s in specs.items()}
    assembled = assemble_step(
        cfg, model, runtimes, sizes, loaders,
        rank=info.rank, world_size=info.world_size, device=torch.device("cpu"), optimizers=sgd,
    )  # fmt: skip
    result = run_iteration(assembled.ctx, plan, set(TASKS))
    params = {n: p.detach().clone() for n, p in assembled.engine.module.named_parameters()}
    dist.destroy_process_group()
    return {
        "params": params,
        "norm": result.grad_norm,
        "losses": result.task_loss_sums.tolist(),
        "works": plan.rank_work(info.rank),
    }


@pytest.mark.parametrize(("zero_stage", "ep_size"), [(0, 1), (0, 2), (1, 2)])
def test_a_cap_below_the_group_gives_the_whole_batch_update(zero_stage: int, ep_size: int) -> None:
    expected = reference()
    results = run_distributed(simt_step, 2, zero_stage, ep_size)
    reid = [w for r in results for w in r["works"] if w.task == "reid"]
    assert [w.local_batch for w in reid] == [BATCH]  # one rank, 8 micro-batches of 2
    assert {w.task for w in results[1]["works"]} == {"attr"}
    for result in results:
        assert result["norm"] > CLIP  # clipping is active, so its norm matters
        assert result["norm"] == pytest.approx(expected["norm"], rel=1e-4)
        for name, value in result["params"].items():
            torch.testing.assert_close(
                value, expected["params"][name], rtol=1e-4, atol=1e-6, msg=name
            )
