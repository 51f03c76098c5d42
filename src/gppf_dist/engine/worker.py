"""A training worker, top to bottom: set up, build, resume, train, evaluate, close.

Started once per rank by the launcher with the resolved config; never runs Hydra.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gppf_dist.config.load import to_container
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.loader import TaskLoader
from gppf_dist.data.manifest import load_manifest
from gppf_dist.dist.env import (
    init_distributed,
    pick_device,
    rank_info_from_env,
    shutdown_distributed,
)
from gppf_dist.engine import resume as ckpt
from gppf_dist.engine.deepspeed import create_engine
from gppf_dist.engine.evaluate import evaluate
from gppf_dist.engine.optim import build_optimizer
from gppf_dist.engine.step import TaskRuntime, run_iteration
from gppf_dist.engine.validate import validate_run
from gppf_dist.logging.heatmap import render_usage
from gppf_dist.logging.metrics import MetricsFile
from gppf_dist.logging.wandb_run import open_run
from gppf_dist.model.build import build_model
from gppf_dist.simt.objective import TaskWeights, objective, task_means
from gppf_dist.simt.plan import TaskDemand, plan_static
from gppf_dist.tasks.registry import get_task_type, make_spec


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_worker(cfg: RunConfig) -> None:
    # ---- process group, device, checks --------------------------------------------------
    device = pick_device(cfg.trainer.device, rank_info_from_env())
    info = init_distributed(cfg.parallel.backend, device, cfg.parallel.timeout_s)
    validate_run(cfg, info.world_size)
    if cfg.parallel.ep_size != 1:
        raise ValueError(
            f"`parallel.ep_size`={cfg.parallel.ep_size}: expert parallelism is not available yet"
        )
    run_dir = Path(cfg.run.dir)
    seed_everything(cfg.trainer.seed)

    # ---- tasks, model, engine -------------------------------------------------------------
    active = cfg.simt.active_tasks()
    root = Path(cfg.data.root)
    manifest = load_manifest(root)
    specs = {
        name: make_spec(
            name, t.type, (t.input_size[0], t.input_size[1]), manifest.tasks[name].label_space
        )
        for name, t in active.items()
    }
    task_types = {name: get_task_type(t.type) for name, t in active.items()}
    model = build_model(cfg.model, specs).to(device)
    optimizer, scheduler = build_optimizer(model, cfg.trainer)
    engine = create_engine(cfg, model, optimizer, scheduler, info.world_size, device)

    demands = [
        TaskDemand(name, t.batch_size, cfg.data.streams_per_task, t.weight)
        for name, t in active.items()
    ]
    plan = plan_static(demands, info.world_size)
    if cfg.simt.dry_run:
        if info.is_main:
            print(plan.describe(demands), flush=True)
        shutdown_distributed()
        return

    # ---- resume ---------------------------------------------------------------------------
    state = ckpt.restore(engine, run_dir, cfg.resume) or {}
    start_step = int(state.get("step", 0))
    if state and info.is_main:
        print(
            f"resuming from checkpoint at step {start_step} in {run_dir / 'checkpoints'}",
            flush=True,
        )
    positions = state.get("data_positions", {})
    tasks: dict[str, TaskRuntime] = {}
    for index, (name, t) in enumerate(active.items()):
        tasks[name] = TaskRuntime(index, task_types[name], TaskWeights(t.weight, t.batch_size))
    for work in plan.rank_work(info.rank):
        tasks[work.task].loader = TaskLoader(
            root=root,
            manifest=manifest,
            task=work.task,
            spec=specs[work.task],
            task_type=task_types[work.task],
            num_streams=cfg.data.streams_per_task,
            stream_ids=list(work.stream_ids),
            per_stream_batch=work.local_batch // len(work.stream_ids),
            seed=cfg.trainer.seed,
            train=True,
            start_positions={int(k): v for k, v in positions.get(work.task, {}).items()} or None,
        )

    # ---- logging --------------------------------------------------------------------------
    run = open_run(
        enabled=info.is_main and cfg.logger.name == "wandb",
        mode=cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        name=cfg.run.name,
        run_dir=run_dir,
        config=to_container(cfg),
        saved_id=state.get("wandb_run_id"),
    )
    metrics = MetricsFile(run_dir / "metrics.jsonl", start_step) if info.is_main else None

    def run_eval() -> dict[str, dict[str, float]]:
        return evaluate(
            engine.module,
            root=root,
            manifest=manifest,
            specs=specs,
            task_types=task_types,
            batch_size=cfg.trainer.eval_batch_size,
            rank=info.rank,
            world_size=info.world_size,
            device=device,
        )

    eval_path = run_dir / "eval.json"
    if start_step == 0 and cfg.trainer.eval_at_start:
        start_eval = run_eval()
        if info.is_main:
            eval_path.write_text(
                json.dumps({"step": 0, "tasks": start_eval, "start": start_eval}, indent=2)
            )

    # ---- train ----------------------------------------------------------------------------
    names = list(active)
    weights = torch.tensor([t.weight for t in active.values()], dtype=torch.float64)
    batch_sizes = torch.tensor([t.batch_size for t in active.values()], dtype=torch.float64)
    global_batch = int(batch_sizes.sum())
    bar = tqdm(
        total=cfg.trainer.max_steps,
        initial=start_step,
        disable=not (info.is_main and cfg.trainer.progress),
        desc="train",
        dynamic_ncols=True,
    )
    for step in range(start_step, cfg.trainer.max_steps):
        engine.module.set_step(step)
        t0 = time.perf_counter()
        result = run_iteration(engine, plan.rank_work(info.rank), tasks, info.world_size, device)
        step_s = time.perf_counter() - t0
        done = step + 1
        means = task_means(result.task_loss_sums, batch_sizes)
        loss = objective(means, weights) + result.regularizer
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if metrics is not None and done % cfg.trainer.log_every == 0:
            record = {
                "step": done,
                "loss": loss,
                **{f"loss/{n}": float(means[i]) for i, n in enumerate(names)},
                "loss/router_reg": result.regularizer,
                "lr": float(engine.get_lr()[0]),
                "samples_per_s": global_batch / step_s,
                "time/step_s": step_s,
                "time/data_s": result.data_s,
            }
            metrics.write(record)
            run.log(record, done)
        if info.is_main and done % cfg.logger.heatmap_every == 0:
            usage = engine.module.lego_usage().cpu().numpy()
            run.log_heatmap("lego_usage", render_usage(usage, names), done)
        if done % cfg.trainer.checkpoint_every == 0 or done == cfg.trainer.max_steps:
            local = {w.task: tasks[w.task].loader.positions() for w in plan.rank_work(info.rank)}  # type: ignore[union-attr]
            ckpt.save(
                engine,
                run_dir,
                done,
                ckpt.gather_positions(local, info.world_size),
                run.id,
                info.world_size,
                cfg.trainer.keep_checkpoints,
                info.is_main,
            )
    bar.close()

    # ---- evaluate and close -----------------------------------------------------------------
    final_eval = run_eval()
    if info.is_main:
        previous = json.loads(eval_path.read_text()) if eval_path.is_file() else {}
        out = {"step": cfg.trainer.max_steps, "tasks": final_eval, "start": previous.get("start")}
        tmp = eval_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(eval_path)
        run.log(
            {f"eval/{t}/{k}": v for t, m in final_eval.items() for k, v in m.items()},
            cfg.trainer.max_steps,
        )
    if metrics is not None:
        metrics.close()
    run.finish()
    shutdown_distributed()
