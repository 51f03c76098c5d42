"""GPU discipline of the real SIMT step, checked on CPU processes.

* the hot path (first forward to optimizer step) makes no host sync: `HostSyncCounter` sees every
  `.item()/.tolist()/.cpu()/float(t)/bool(t)`/mask-indexing call, whatever the device; the
  step's one documented sync comes after the optimizer step;
* bf16 reaches the convolutions and matmuls *through the DeepSpeed engine* when DeepSpeed
  switches the outer autocast off, as its forward does on CUDA (`torch_autocast.py` checks CUDA
  autocast only, so here the check is pointed at the CPU autocast);
* channels-last reaches the weights, and survives the engine;
* compute times arrive one step late (device timings are read after the end-of-step sync).
"""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path
from typing import Any

import torch

from .harness import run_distributed

REPO = Path(__file__).resolve().parents[2]


def _demo_step(precision: str = "fp32", channels_last: bool = False, batch: int = 4) -> Any:
    """A real engine and SIMT step context over the 8 demo tasks (tiny GPPF-R50)."""
    import torch.distributed as dist
    import yaml

    from gppf_dist.config.model import model_config_from_dict
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.engine.assemble import assemble_step
    from gppf_dist.engine.step import TaskRuntime
    from gppf_dist.model.build import build_model
    from gppf_dist.simt.objective import TaskWeights
    from gppf_dist.simt.plan import TaskDemand, plan_static
    from gppf_dist.tasks.base import Batch
    from gppf_dist.tasks.demo import demo_specs, synthetic_batch
    from gppf_dist.tasks.registry import get_task_type

    info = init_distributed("gloo", torch.device("cpu"), 120)
    conf = yaml.safe_load((REPO / "conf/model/gppf_r50_tiny.yaml").read_text())
    model_cfg = model_config_from_dict(conf)
    model_cfg.router.gumbel_warmup_steps = 10  # the noisy, unfrozen routing path
    specs = demo_specs()
    torch.manual_seed(0)
    model = build_model(model_cfg, specs)
    cfg = RunConfig()
    cfg.model = model_cfg
    cfg.trainer.grad_clip, cfg.trainer.precision = 1.0, precision
    cfg.trainer.channels_last = channels_last
    plan = plan_static([TaskDemand(t, batch, 4) for t in specs], dist.get_world_size())
    runtimes = {}
    for i, task in enumerate(specs):
        runtimes[task] = TaskRuntime(i, get_task_type(specs[task].type), TaskWeights(1.0, batch))
    loaders = {}
    for work in plan.rank_work(info.rank):
        gen = torch.Generator().manual_seed(zlib.crc32(work.task.encode()))
        images, targets = synthetic_batch(specs[work.task], work.local_batch, gen)
        groups = torch.zeros(work.local_batch, dtype=torch.long)
        loaders[work.task] = itertools.repeat(
            Batch(task=work.task, images=images, targets=targets, groups=groups, keys=[])
        )
    sizes = {t: s.input_size for t, s in specs.items()}
    step = assemble_step(
        cfg, model, runtimes, sizes, loaders,
        rank=info.rank, world_size=info.world_size, device=torch.device("cpu"),
    )  # fmt: skip
    return step.ctx, plan, set(specs)


def _count_syncs() -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.bench.host_sync import HostSyncCounter, watch_optimizer_step
    from gppf_dist.engine.step import run_iteration

    ctx, plan, present = _demo_step()
    module = ctx.engine.module
    seconds = []
    with HostSyncCounter() as counter, watch_optimizer_step(counter, ctx.engine):
        for step in range(3):
            counter.phase = "before step"
            module.set_step(step)  # the worker's order: the router's host copy is taken here
            counter.phase = "step"
            result = run_iteration(ctx, plan, present)
            seconds.append(result.task_seconds.tolist())
    dist.destroy_process_group()
    after = [r for r in counter.records if r.phase == "after optimizer step"]
    return {
        "hot": [f"{r.op} at {r.site}" for r in counter.hot_path()],
        "after": sorted({f"{r.op} at {r.site}" for r in after if "step.py" in r.site}),
        "seconds": seconds,
    }


def test_hot_path_makes_no_host_sync_and_times_arrive_a_step_late() -> None:
    for result in run_distributed(_count_syncs, 2):
        assert result["hot"] == [], "host syncs before the optimizer step:\n" + "\n".join(
            result["hot"]
        )
        # The documented one: statistics, regularizer and norm come back in one copy.
        assert len(result["after"]) == 1, result["after"]
        assert result["after"][0].startswith("tolist at engine/step.py"), result["after"]
        first, second, _ = result["seconds"]
        assert first == [0.0] * 8  # nothing timed before the first step
        assert all(s > 0 for s in second)  # the first step's times, summed over both ranks


def _conv_and_linear_dtypes(wrap_forward_in_model: bool) -> dict[str, Any]:
    import deepspeed.runtime.torch_autocast as ds_autocast
    import torch.distributed as dist
    from torch import nn

    from gppf_dist.engine import precision as precision_mod
    from gppf_dist.engine.step import run_iteration

    # DeepSpeed's forward looks at CUDA autocast only; point it at the CPU autocast, so it
    # switches the step's outer autocast off exactly as it does on a GPU.
    # (`ds_autocast.torch` is torch itself: only its no-argument form, DeepSpeed's, changes.)
    original = torch.is_autocast_enabled
    ds_autocast.torch.is_autocast_enabled = lambda *a: original(*(a or ("cpu",)))
    if not wrap_forward_in_model:  # control: only the step's outer autocast
        precision_mod.autocast_in_forward = lambda *a, **k: None
    ctx, plan, present = _demo_step(precision="bf16")
    seen: set[str] = set()

    def record(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        seen.add(str(output.dtype))  # autocast casts inside the op: its output tells

    for m in ctx.engine.module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(record)
    ctx.engine.module.set_step(0)
    result = run_iteration(ctx, plan, present)
    dist.destroy_process_group()
    conv_weight = next(p for p in ctx.engine.module.parameters() if p.dim() == 4)
    return {"dtypes": sorted(seen), "loss": result.task_loss_sums.tolist(), "w": conv_weight.dtype}


def test_bf16_reaches_convolutions_through_the_deepspeed_engine() -> None:
    (inside,) = run_distributed(_conv_and_linear_dtypes, 1, True)
    assert inside["dtypes"] == ["torch.bfloat16"], inside["dtypes"]
    assert inside["w"] == torch.float32  # parameters stay fp32
    assert all(torch.isfinite(torch.tensor(inside["loss"])))
    # The simulation is faithful: with autocast only around engine(...), DeepSpeed's forward
    # switches it off and the convolutions run in fp32 (what the step did before).
    (outside,) = run_distributed(_conv_and_linear_dtypes, 1, False)
    assert "torch.float32" in outside["dtypes"], outside["dtypes"]


def _channels_last_after_steps() -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.engine.step import run_iteration

    ctx, plan, present = _demo_step(channels_last=True)
    for step in range(2):
        ctx.engine.module.set_step(step)
        run_iteration(ctx, plan, present)
    dist.destroy_process_group()
    weights = [p for p in ctx.engine.module.parameters() if p.dim() == 4]
    stepped = [p for p in weights if ctx.engine.optimizer.state.get(p)]
    return {
        "n": len(weights),
        "nhwc": sum(p.is_contiguous(memory_format=torch.channels_last) for p in weights),
        "stepped": len(stepped),
    }


def test_channels_last_reaches_the_weights_and_survives_the_engine() -> None:
    for result in run_distributed(_channels_last_after_steps, 2):
        assert result["n"] > 0 and result["nhwc"] == result["n"], result
        assert result["stepped"] > 0  # the optimizer still holds (and steps) the same tensors
