"""`gppf-bench throughput`: training images per second and MFU of one device, through the real
SIMT step (DeepSpeed engine, SIMT reduction, clipping, statistics) on one task's fixed batch.

    gppf-bench throughput --model gppf_r50 --size 224 --batch 256 --precision bf16 \
        --channels-last --peak-tflops 989 --json          # one H100 (bf16 dense peak)

Training FLOPs per image are 3x the forward FLOPs that torch's FlopCounterMode counts for the
routed model at that size (forward + backward of activations and weights); MFU is
img/s x FLOPs per image / peak, reported when `--peak-tflops` is given. Steps are timed one by
one, synchronizing the device, after `--warmup` untimed steps; the figure is the median.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from gppf_dist.bench._procs import time_steps
from gppf_dist.dist.env import free_port, set_local_rank_env


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gppf-bench throughput", description=__doc__)
    p.add_argument("--model", default="gppf_r50", help="a conf/model/ preset")
    p.add_argument("--task", default="cls_object", help="a demo task (its head and loss)")
    p.add_argument("--size", type=int, default=224, help="square input side, pixels")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--peak-tflops", type=float, help="device peak, for MFU (H100 bf16: 989)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def _model_and_spec(args: argparse.Namespace) -> tuple[Any, Any]:
    import yaml

    from gppf_dist.config.model import model_config_from_dict
    from gppf_dist.model.build import build_model
    from gppf_dist.tasks.demo import demo_specs

    specs = demo_specs()
    if args.task not in specs:
        raise SystemExit(f"--task {args.task!r}: not a demo task; known: {sorted(specs)}")
    spec = dataclasses.replace(specs[args.task], input_size=(args.size, args.size))
    conf = Path(__file__).resolve().parents[3] / "conf" / "model" / f"{args.model}.yaml"
    if not conf.is_file():
        raise SystemExit(f"--model {args.model!r}: no {conf}")
    model_cfg = model_config_from_dict(yaml.safe_load(conf.read_text()))
    torch.manual_seed(0)
    return build_model(model_cfg, {args.task: spec}), spec


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import init_distributed, pick_device, rank_info_from_env
    from gppf_dist.engine.deepspeed import create_engine
    from gppf_dist.engine.optim import build_optimizer
    from gppf_dist.engine.runtime import active_legos
    from gppf_dist.engine.step import StepContext, TaskRuntime, run_iteration
    from gppf_dist.model.summary import count_gmacs
    from gppf_dist.simt.objective import TaskWeights
    from gppf_dist.simt.plan import TaskDemand, plan_static
    from gppf_dist.tasks.base import Batch
    from gppf_dist.tasks.demo import synthetic_batch
    from gppf_dist.tasks.registry import get_task_type

    set_local_rank_env(0, 1, free_port())
    device = pick_device(args.device, rank_info_from_env())
    init_distributed("auto", device, 600)
    model, spec = _model_and_spec(args)
    model.eval()
    gflop = 3 * 2 * count_gmacs(model, args.task, torch.zeros(1, 3, args.size, args.size).byte())
    model.train()
    model = model.to(device)
    cfg = RunConfig()
    optimizer, scheduler = build_optimizer(model, cfg.trainer)
    engine = create_engine(cfg, model, optimizer, scheduler, 1, device)
    images, targets = synthetic_batch(spec, args.batch, torch.Generator().manual_seed(0))
    batch = Batch(
        task=args.task,
        images=images.to(device),
        targets=targets,
        groups=torch.zeros(args.batch, dtype=torch.long),
        keys=[],
    )
    task = TaskRuntime(0, get_task_type(spec.type), TaskWeights(1.0, args.batch))
    task.loader = itertools.repeat(batch)
    ctx = StepContext(
        engine=engine,
        tasks={args.task: task},
        world_size=1,
        rank=0,
        device=device,
        owners=model.param_owners(),
        active_legos=lambda t: active_legos(model, t),
        grad_clip=cfg.trainer.grad_clip,
        own_reduction=True,
        precision=args.precision,
        channels_last=args.channels_last,
    )
    plan = plan_static([TaskDemand(args.task, args.batch, 1)], 1)

    def step() -> None:
        run_iteration(ctx, plan, {args.task})

    time_steps(step, args.warmup)
    step_s = statistics.median(time_steps(step, args.steps))
    img_per_s = args.batch / step_s
    mfu = img_per_s * gflop * 1e9 / (args.peak_tflops * 1e12) if args.peak_tflops else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    torch.distributed.destroy_process_group()
    return {
        "img_per_s": img_per_s,
        "step_s": step_s,
        "train_gflop_per_img": gflop,
        "mfu": mfu,
        "device": name,
        "config": {
            k: getattr(args, k)
            for k in ("model", "task", "size", "batch", "precision", "channels_last", "steps")
        },
    }


def main(argv: list[str]) -> None:
    args = _parse(argv)
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] is not None else ""
    print(
        f"{args.model} {args.task} {args.size}px batch {args.batch} {args.precision}"
        f"{' channels-last' if args.channels_last else ''} on {result['device']}: "
        f"{result['img_per_s']:.1f} img/s ({result['step_s'] * 1e3:.1f} ms/step, "
        f"{result['train_gflop_per_img']:.3g} training GFLOP/img{mfu})"
    )
