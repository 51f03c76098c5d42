"""`gppf-bench step`: a SIMT step against the same work written as a bare PyTorch loop.

Both sides run in the same N gloo processes on the same pre-built batches (the demo tasks at
demo sizes, or `--model`), the same task-to-rank plan, the same model initialisation and AdamW:

* SIMT: the real engine step (DeepSpeed engine, SIMT grouped reduction, clipping, statistics).
* bare: for each local task forward + per-sample loss + backward, one flat all-reduce of every
  gradient, clip, `optimizer.step()`.

They alternate in blocks so machine noise hits both alike; the ratio is of median step times.
Each side first runs `--warmup` untimed steps (default 5: on a GPU, cuDNN's autotuner times its
algorithms over the first steps of every input shape, and allocator pools fill). `run(args)`
returns the result that `--json` prints.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import zlib
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.bench._procs import join_local_group, time_steps
from gppf_dist.config.resources import model_yaml
from gppf_dist.dist.spawn import spawn_ranks

DEFAULT_BATCH = 16


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gppf-bench step", description=__doc__)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--model", default="gppf_r50_tiny", help="a conf/model/ preset")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="global batch per task")
    p.add_argument("--steps", type=int, default=8, help="timed steps per block")
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks per side")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per side first")
    p.add_argument("--threads", type=int, help="intra-op threads per process (cores / nproc)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.warmup < 0:
        raise SystemExit(f"--warmup {args.warmup}: must be >= 0")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and args.nproc > torch.cuda.device_count():
        raise SystemExit(f"--nproc {args.nproc}: only {torch.cuda.device_count()} GPU(s) here")
    return args


def build_setup(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Model, plan and this rank's batches; identical construction on every rank."""
    import yaml

    from gppf_dist.config.model import model_config_from_dict
    from gppf_dist.model.build import build_model
    from gppf_dist.simt.plan import TaskDemand, plan_static
    from gppf_dist.tasks.base import move_to
    from gppf_dist.tasks.demo import demo_specs, synthetic_batch
    from gppf_dist.tasks.registry import get_task_type

    conf = model_yaml(args.model)
    model_cfg = model_config_from_dict(yaml.safe_load(conf.read_text()))
    specs = demo_specs()
    torch.manual_seed(0)
    model = build_model(model_cfg, specs).to(device)
    demands = [TaskDemand(t, args.batch, 4) for t in specs]
    plan = plan_static(demands, dist.get_world_size())
    batches = {}
    for work in plan.rank_work(dist.get_rank()):
        gen = torch.Generator().manual_seed(zlib.crc32(work.task.encode()))
        images, targets = synthetic_batch(specs[work.task], work.local_batch, gen)
        batches[work.task] = (images.to(device), move_to(targets, device))
    types = {t: get_task_type(s.type) for t, s in specs.items()}
    return {
        "model": model,
        "plan": plan,
        "batches": batches,
        "types": types,
        "specs": specs,
        "device": device,
    }


def simt_runner(setup: dict[str, Any], args: argparse.Namespace) -> Any:
    """One SIMT step on `build_setup`'s model and batches, as a callable (`gpu-check` times it)."""
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.engine.assemble import assemble_step
    from gppf_dist.engine.step import TaskRuntime, run_iteration
    from gppf_dist.simt.objective import TaskWeights
    from gppf_dist.tasks.base import Batch

    cfg = RunConfig()
    cfg.trainer.precision = args.precision
    model = setup["model"]
    runtimes = {
        task: TaskRuntime(i, setup["types"][task], TaskWeights(1.0, args.batch))
        for i, task in enumerate(setup["specs"])
    }
    loaders = {}
    for task, (images, targets) in setup["batches"].items():
        groups = torch.zeros(len(images), dtype=torch.long, device=images.device)
        batch = Batch(task=task, images=images, targets=targets, groups=groups, keys=[])
        loaders[task] = itertools.repeat(batch)
    sizes = {t: s.input_size for t, s in setup["specs"].items()}
    step = assemble_step(
        cfg, model, runtimes, sizes, loaders,
        rank=dist.get_rank(), world_size=dist.get_world_size(), device=setup["device"],
    )  # fmt: skip
    present = set(setup["specs"])
    steps = itertools.count()

    def run() -> Any:
        model.set_step(next(steps))  # as the worker does: the step's routes are read here
        return run_iteration(step.ctx, setup["plan"], present)

    run.engine = step.engine  # type: ignore[attr-defined]
    return run


def _bare_runner(setup: dict[str, Any], args: argparse.Namespace) -> Any:
    import copy

    model = copy.deepcopy(setup["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    world = dist.get_world_size()
    params = [p for p in model.parameters() if p.requires_grad]
    works = setup["plan"].rank_work(dist.get_rank())
    bf16 = args.precision == "bf16"

    def step() -> None:
        for work in works:
            images, targets = setup["batches"][work.task]
            groups = torch.zeros(len(images), dtype=torch.long, device=images.device)
            with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
                outputs = model(work.task, images)
                per_sample = setup["types"][work.task].loss(outputs, targets, groups).float()
            (per_sample.sum() * world / args.batch + model.regularizer()).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _worker(rank: int, world: int, port: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """One rank: both sides' step times, in alternating blocks after the warm-up."""
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import configure_cuda_math

    threads = args.threads or max(1, (os.cpu_count() or 1) // world)
    device = join_local_group(rank, world, port, threads, args.device)
    trainer = RunConfig().trainer  # cuDNN autotuning and TF32 as training has them, both sides
    configure_cuda_math(device, tf32=trainer.tf32, cudnn_benchmark=trainer.cudnn_benchmark)
    setup = build_setup(args, device)
    bare = _bare_runner(setup, args)  # first: it copies the model before SIMT wraps it
    simt = simt_runner(setup, args)
    time_steps(simt, args.warmup), time_steps(bare, args.warmup)
    times: dict[str, list[float]] = {"simt": [], "bare": []}
    for _ in range(args.blocks):
        times["simt"] += time_steps(simt, args.steps)
        times["bare"] += time_steps(bare, args.steps)
    dist.destroy_process_group()
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Spawn the processes, time both sides, return the result `--json` prints."""
    times = spawn_ranks(_worker, args.nproc, args)[0]
    simt, bare = statistics.median(times["simt"]), statistics.median(times["bare"])
    return {
        "ratio": simt / bare,
        "simt_step_s": simt,
        "bare_step_s": bare,
        "nproc": args.nproc,
        "model": args.model,
        "device": args.device,
        "precision": args.precision,
        "batch": args.batch,
        "steps_per_side": len(times["simt"]),
        "warmup": args.warmup,
    }


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = run(args)
    simt, bare = result["simt_step_s"], result["bare_step_s"]
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"SIMT step {simt * 1e3:.1f} ms, bare loop {bare * 1e3:.1f} ms "
            f"(median of {result['steps_per_side']} each, {args.nproc} processes, {args.model}): "
            f"ratio {simt / bare:.3f}"
        )
