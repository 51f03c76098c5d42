"""`gppf-bench throughput`: training images per second and MFU of one device, through the real
SIMT step (DeepSpeed engine, SIMT reduction, clipping, statistics) on one task's fixed batch.

    gppf-bench throughput --model gppf_r50 --size 224 --batch 256 --precision bf16 \
        --channels-last --peak-tflops 989 --json          # one H100 (bf16 dense peak)

Training FLOPs per image are 3x the forward FLOPs that torch's FlopCounterMode counts for the
routed model at that size (forward + backward of activations and weights); MFU is
img/s x FLOPs per image / peak, reported when `--peak-tflops` is given. Steps are timed one by
one, synchronizing the device, after `--warmup` untimed steps; the figure is the median.

`peak_mem_gib` is the device's peak allocated memory over the warm-up and timed steps
(`torch.cuda.max_memory_allocated` after a reset; parameters, gradients and optimizer state
included); on CPU it is the process's peak resident set instead (`mem_source` says which).
`--activation-checkpointing` recomputes the lego mixtures in backward
(`trainer.activation_checkpointing`). `run(argv)` returns the result that `--json` prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import resource
import statistics
from typing import Any

import torch

from gppf_dist.bench._procs import time_steps
from gppf_dist.config.resources import model_yaml
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
    p.add_argument(
        "--activation-checkpointing", action="store_true", help="recompute lego mixtures"
    )
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
    conf = model_yaml(args.model)
    if not conf.is_file():
        raise SystemExit(f"--model {args.model!r}: no {conf}")
    model_cfg = model_config_from_dict(yaml.safe_load(conf.read_text()))
    torch.manual_seed(0)
    return build_model(model_cfg, {args.task: spec}), spec


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from gppf_dist.dist.env import init_distributed, pick_device, rank_info_from_env

    set_local_rank_env(0, 1, free_port())
    device = pick_device(args.device, rank_info_from_env())
    init_distributed("auto", device, 600)
    try:
        return _measure(args, device)
    finally:  # also after an out-of-memory error, so the caller can report it and go on
        torch.distributed.destroy_process_group()


def _measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import configure_cuda_math
    from gppf_dist.engine.assemble import assemble_step
    from gppf_dist.engine.step import TaskRuntime, run_iteration
    from gppf_dist.model.summary import count_gmacs
    from gppf_dist.simt.objective import TaskWeights
    from gppf_dist.simt.plan import TaskDemand, plan_static
    from gppf_dist.tasks.base import Batch
    from gppf_dist.tasks.demo import synthetic_batch
    from gppf_dist.tasks.registry import get_task_type

    cfg = RunConfig()
    configure_cuda_math(device, tf32=cfg.trainer.tf32, cudnn_benchmark=cfg.trainer.cudnn_benchmark)
    model, spec = _model_and_spec(args)
    model = model.to(device).eval()
    probe = torch.zeros(1, 3, args.size, args.size, dtype=torch.uint8, device=device)
    gflop = 3 * 2 * count_gmacs(model, args.task, probe)
    model.train()
    cfg.trainer.precision = args.precision
    cfg.trainer.activation_checkpointing = args.activation_checkpointing
    cfg.trainer.channels_last = args.channels_last
    images, targets = synthetic_batch(spec, args.batch, torch.Generator().manual_seed(0))
    batch = Batch(
        task=args.task,
        images=images.to(device),
        targets=targets,
        groups=torch.zeros(args.batch, dtype=torch.long),
        keys=[],
    )
    task = TaskRuntime(0, get_task_type(spec.type), TaskWeights(1.0, args.batch))
    assembled = assemble_step(
        cfg, model, {args.task: task}, {args.task: spec.input_size},
        {args.task: itertools.repeat(batch)}, rank=0, world_size=1, device=device,
    )  # fmt: skip
    ctx = assembled.ctx
    plan = plan_static([TaskDemand(args.task, args.batch, 1)], 1)

    def step() -> None:
        run_iteration(ctx, plan, {args.task})

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    time_steps(step, args.warmup)
    step_s = statistics.median(time_steps(step, args.steps))
    img_per_s = args.batch / step_s
    mfu = img_per_s * gflop * 1e9 / (args.peak_tflops * 1e12) if args.peak_tflops else None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak_mem, mem_source = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:  # Linux reports ru_maxrss in KiB
        name = "cpu"
        peak_mem, mem_source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "max_rss"
    return {
        "img_per_s": img_per_s,
        "step_s": step_s,
        "train_gflop_per_img": gflop,
        "mfu": mfu,
        "batch": args.batch,
        "peak_mem_gib": peak_mem / 2**30,
        "mem_source": mem_source,
        "device": name,
        "config": {
            k: getattr(args, k)
            for k in (
                "model",
                "task",
                "size",
                "batch",
                "precision",
                "channels_last",
                "activation_checkpointing",
                "steps",
                "warmup",
            )
        },
    }


def run(argv: list[str]) -> dict[str, Any]:
    """The result `gppf-bench throughput <argv> --json` prints."""
    return measure(_parse(argv))


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
        f"{result['train_gflop_per_img']:.3g} training GFLOP/img{mfu}, "
        f"peak memory {result['peak_mem_gib']:.2f} GiB)"
    )
