"""Expert parallelism under DeepSpeed ZeRO 1/2: one real SIMT iteration on 2 gloo ranks at
ep_size 2 (and, as the control, ep_size 1) equals the single-process update of J, with gradient
clipping active, and reports the global gradient norm.

The optimizer is plain SGD so that the update is -lr x the clipped gradient: a wrong gradient
scale (say, lego gradients E times too large), a lego counted twice in the norm, or a clip by a
partial norm all change the parameters. (Adam would hide a uniform scale error.) The worker's
AdamW path runs end to end in tests/dist/test_expert_parallel_runs.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from .harness import run_distributed
from .sgd import clipped_sgd_update

TASKS = {"attr": 2.0, "cls_object": 1.0, "pose": 0.5}  # name: weight
BATCH, STREAMS = 4, 2
LR, CLIP = 0.1, 0.5


def _slice(tree: Any, idx: torch.Tensor) -> Any:
    if torch.is_tensor(tree):
        return tree[idx]
    return {k: _slice(v, idx) for k, v in tree.items()}


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
    return model, specs, data


def reference() -> dict[str, Any]:
    """J on one process; every parameter takes part (ZeRO semantics), clip, SGD."""
    from gppf_dist.tasks.registry import get_task_type

    model, specs, data = _setup()
    objective = model.regularizer()
    for task, weight in TASKS.items():
        images, targets = data[task]
        per_sample = get_task_type(specs[task].type).loss(
            model(task, images), targets, torch.zeros(BATCH, dtype=torch.long)
        )
        objective = objective + weight * per_sample.mean()
    return clipped_sgd_update(model, objective, LR, CLIP)


def simt_step(
    zero_stage: int, ep_size: int, poison: bool = False, precision: str = "fp32"
) -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.engine.assemble import assemble_step
    from gppf_dist.engine.step import TaskRuntime, run_iteration
    from gppf_dist.simt.objective import TaskWeights
    from gppf_dist.simt.plan import TaskDemand, plan_static
    from gppf_dist.tasks.base import Batch
    from gppf_dist.tasks.registry import get_task_type

    info = init_distributed("gloo", torch.device("cpu"), 60)
    model, specs, data = _setup()
    owners = model.param_owners()
    is_lego = {n: owners.is_lego(n) for n, _ in model.named_parameters()}
    cfg = RunConfig()
    cfg.parallel.zero_stage, cfg.parallel.ep_size, cfg.trainer.grad_clip = zero_stage, ep_size, CLIP
    cfg.model.num_legos = 4
    cfg.trainer.precision, cfg.trainer.channels_last = precision, precision == "bf16"
    made = []  # (optimizer, schedule): the shared parameters', then (EP) the legos'

    def sgd(module: torch.nn.Module, select: Any) -> Any:
        params = [p for n, p in module.named_parameters() if select is None or select(n)]
        optimizer = torch.optim.SGD(params, lr=LR)
        made.append((optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)))
        return made[-1]

    demands = [TaskDemand(t, BATCH, STREAMS, w) for t, w in TASKS.items()]
    plan = plan_static(demands, info.world_size)
    runtimes = {
        t: TaskRuntime(i, get_task_type(specs[t].type), TaskWeights(w, BATCH))
        for i, (t, w) in enumerate(TASKS.items())
    }
    per_stream = BATCH // STREAMS
    loaders = {}
    for work in plan.rank_work(info.rank):
        images, targets = data[work.task]
        idx = torch.cat(
            [torch.arange(s * per_stream, (s + 1) * per_stream) for s in work.stream_ids]
        )
        batch = Batch(
            task=work.task,
            images=images[idx],
            targets=_slice(targets, idx),
            groups=torch.zeros(len(idx), dtype=torch.long),
            keys=[],
        )
        loaders[work.task] = iter([batch])
    sizes = {t: tuple(s.input_size) for t, s in specs.items()}
    assembled = assemble_step(
        cfg, model, runtimes, sizes, loaders,
        rank=info.rank, world_size=info.world_size, device=torch.device("cpu"), optimizers=sgd,
    )  # fmt: skip
    engine, legos, ctx = assembled.engine, assembled.legos, assembled.ctx
    scheduler = made[0][1]
    before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    if poison:  # a non-finite gradient in one lego only: DeepSpeed must see it and skip
        lego = next(p for n, p in engine.module.named_parameters() if is_lego[n])
        lego.register_hook(lambda g: g * float("nan"))
    result = run_iteration(ctx, plan, set(TASKS))
    params = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    dist.destroy_process_group()
    return {
        "params": params,
        "before": before,
        "norm": result.grad_norm,
        "works": plan.rank_work(info.rank),
        "epochs": (scheduler.last_epoch, legos.scheduler.last_epoch if legos else None),
    }


@pytest.mark.parametrize(("zero_stage", "ep_size"), [(1, 2), (2, 2), (2, 1)])
def test_zero_update_with_expert_parallel_legos_equals_reference(
    zero_stage: int, ep_size: int
) -> None:
    expected = reference()
    results = run_distributed(simt_step, 2, zero_stage, ep_size)
    assert {len(r["works"]) for r in results} == {1, 2}  # one rank idles a micro-step
    lego_names = {n for n in expected["params"] if ".legos." in n}
    legos_seen: set[str] = set()
    for result in results:
        held = {n for n in result["params"] if ".legos." in n}
        assert len(held) * ep_size == len(lego_names)  # 1/E of the legos on each rank
        assert result["norm"] > CLIP  # clipping is active, so its norm matters
        assert result["norm"] == pytest.approx(expected["norm"], rel=1e-4)
        for name, value in result["params"].items():
            torch.testing.assert_close(
                value, expected["params"][name], rtol=1e-4, atol=1e-6, msg=name
            )
            legos_seen.update({name} if ".legos." in name else set())
    assert legos_seen == lego_names


def test_a_non_finite_lego_gradient_skips_the_whole_step() -> None:
    """DeepSpeed skips a step whose norm is not finite; the legos must skip it with it (no NaN
    weights, no momentum or decay step, no schedule drift)."""
    for result in run_distributed(simt_step, 2, 1, 2, True):
        assert result["epochs"] == (0, 0)
        for name, value in result["params"].items():
            assert torch.equal(value, result["before"][name]), name


def test_bf16_autocast_and_channels_last_under_expert_parallelism() -> None:
    """Mixed precision keeps fp32 parameters and exchanges (an idle rank has no activation to
    take a dtype from): the update stays close to the fp32 one, yet bf16 really ran."""
    expected = reference()
    for result in run_distributed(simt_step, 2, 1, 2, False, "bf16"):
        assert result["norm"] != expected["norm"]
        assert result["norm"] == pytest.approx(expected["norm"], rel=0.05)
        for name, value in result["params"].items():
            assert value.dtype == torch.float32, name
            torch.testing.assert_close(
                value, expected["params"][name], rtol=0.05, atol=5e-3, msg=name
            )
