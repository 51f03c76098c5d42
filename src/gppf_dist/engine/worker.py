"""A training worker, top to bottom: set up, build, resume, train, evaluate, close.

Started once per rank by the launcher with the resolved config; never runs Hydra.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gppf_dist.config.load import to_container
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.manifest import load_manifest
from gppf_dist.dist.env import (
    configure_cuda_math,
    init_distributed,
    pick_device,
    rank_info_from_env,
    shutdown_distributed,
)
from gppf_dist.dist.mesh import build_expert_groups
from gppf_dist.engine import resume as ckpt
from gppf_dist.engine.deepspeed import create_engine
from gppf_dist.engine.evaluate import evaluate
from gppf_dist.engine.experts import (
    build_lego_optimizer,
    keep_lego_shards,
    locality_affinity,
    not_lego,
    resumed_placement,
    shard_legos,
)
from gppf_dist.engine.optim import build_optimizer
from gppf_dist.engine.precision import apply_precision, compute_dtype, to_channels_last
from gppf_dist.engine.preempt import PreemptionFlag
from gppf_dist.engine.runtime import (
    TaskSet,
    active_legos,
    build_loaders,
    close_loaders,
    local_positions,
    plan_from_state,
    plan_to_state,
    restore_rng,
    rng_state,
    seed_everything,
    step_record,
)
from gppf_dist.engine.step import StepContext, run_iteration
from gppf_dist.engine.validate import validate_run
from gppf_dist.logging.heatmap import render_usage
from gppf_dist.logging.metrics import MetricsFile
from gppf_dist.logging.wandb_run import open_run
from gppf_dist.model.build import build_model
from gppf_dist.model.lego import set_activation_checkpointing
from gppf_dist.parallel.plan import EPLayout
from gppf_dist.simt.costs import CostTable
from gppf_dist.simt.plan import present_tasks


def run_worker(cfg: RunConfig) -> None:
    # ---- process group, device, checks --------------------------------------------------
    device = pick_device(cfg.trainer.device, rank_info_from_env())
    info = init_distributed(cfg.parallel.backend, device, cfg.parallel.timeout_s)
    configure_cuda_math(device, tf32=cfg.trainer.tf32, cudnn_benchmark=cfg.trainer.cudnn_benchmark)
    validate_run(cfg, info.world_size)
    run_dir = Path(cfg.run.dir)
    seed_everything(cfg.trainer.seed)
    preempt = PreemptionFlag().install()

    # ---- tasks, model, engine -------------------------------------------------------------
    manifest = load_manifest(Path(cfg.data.root))
    taskset = TaskSet.build(cfg, manifest)
    model = build_model(cfg.model, taskset.specs).to(device)
    apply_precision(model, device, cfg.trainer.precision)
    set_activation_checkpointing(model, cfg.trainer.activation_checkpointing)
    owners = model.param_owners()
    placement = ()
    if cfg.parallel.ep_size > 1 and cfg.parallel.place_legos:
        placement = resumed_placement(cfg, taskset, model.router.task_names, info.is_main)
    layout = EPLayout(info.world_size, cfg.parallel.ep_size, cfg.model.num_legos, placement)
    groups = build_expert_groups(layout, info.rank)
    session = None
    if layout.ep_size > 1:
        session = shard_legos(
            model, layout, groups, info.rank, taskset,
            wire_dtype=compute_dtype(cfg.trainer.precision) or torch.float32,
            check_splits=cfg.parallel.check_splits,
        )  # fmt: skip
    lr_mults = {name: t.lr_mult for name, t in taskset.active.items()}
    legos_apart = layout.ep_size > 1 and cfg.parallel.zero_stage > 0  # see lego_optim.py
    optimizer, scheduler = build_optimizer(
        model, cfg.trainer, owners, lr_mults, select=not_lego(owners) if legos_apart else None
    )
    with keep_lego_shards(model, owners):  # DeepSpeed broadcasts rank 0's parameters
        engine = create_engine(cfg, model, optimizer, scheduler, info.world_size, device)
    if cfg.trainer.channels_last and cfg.parallel.zero_stage == 0:  # see precision.py
        to_channels_last(model)
    writes_legos = info.rank < layout.ep_size
    legos = named = None
    if legos_apart:
        legos = build_lego_optimizer(model, cfg.trainer, owners, layout, groups, engine)
        named = ckpt.NamedState(
            legos.optimizer, owners, writes_legos, legos_only=True,
            follow_schedule=legos.follow_schedule,
        )  # fmt: skip
    elif cfg.parallel.zero_stage == 0:
        named = ckpt.NamedState(optimizer, owners, writes_legos)

    # ---- resume ---------------------------------------------------------------------------
    topology = ckpt.Topology(info.world_size, layout.ep_size, cfg.parallel.zero_stage)
    state = ckpt.restore(engine, run_dir, cfg.resume, topology, named) or {}
    start_step = int(state.get("step", 0))
    if state:
        restore_rng(state.get("rng"))
        if info.is_main:
            print(
                f"resuming from checkpoint at step {start_step} in {run_dir / 'checkpoints'}",
                flush=True,
            )
    costs = CostTable.from_state(state.get("costs"))
    plan = plan_from_state(state.get("plan"), info.world_size) or taskset.plan(
        costs, info.world_size
    )
    runtimes = taskset.runtimes()
    build_loaders(
        cfg, taskset, manifest, plan, info.rank, runtimes, state.get("data_positions", {}), device
    )
    ctx = StepContext(
        engine=engine,
        tasks=runtimes,
        world_size=info.world_size,
        rank=info.rank,
        device=device,
        owners=owners,
        active_legos=lambda task: active_legos(model, task),
        grad_clip=cfg.trainer.grad_clip,
        own_reduction=cfg.parallel.zero_stage == 0,
        stop_requested=lambda: preempt.raised,
        ep=session,
        ep_ranks=tuple(groups.ep_ranks),
        edp_group=groups.edp,
        ep_group=groups.ep,
        legos=legos,
        precision=cfg.trainer.precision,
        channels_last=cfg.trainer.channels_last,
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
            root=Path(cfg.data.root),
            manifest=manifest,
            specs=taskset.specs,
            task_types=taskset.types,
            batch_size=cfg.trainer.eval_batch_size,
            rank=info.rank,
            world_size=info.world_size,
            device=device,
            ep=session,
        )

    eval_path = run_dir / "eval.json"
    if start_step == 0 and cfg.trainer.eval_at_start:
        start_eval = run_eval()
        if info.is_main:
            eval_path.write_text(
                json.dumps({"step": 0, "tasks": start_eval, "start": start_eval}, indent=2)
            )

    # ---- train ----------------------------------------------------------------------------
    bar = tqdm(
        total=cfg.trainer.max_steps,
        initial=start_step,
        disable=not (info.is_main and cfg.trainer.progress),
        desc="train",
        dynamic_ncols=True,
    )
    stopped_at: int | None = None
    for step in range(start_step, cfg.trainer.max_steps):
        if cfg.simt.planner == "cost" and step > start_step and step % cfg.simt.replan_every == 0:
            per_sample = {t: costs.cost(t) or 0.0 for t in taskset.names}
            affinity = locality_affinity(
                engine.module, layout, per_sample, cfg.parallel.remote_lego_cost
            )
            new_plan = taskset.plan(costs, info.world_size, affinity)
            if new_plan != plan:
                positions = ckpt.gather_positions(
                    local_positions(plan, info.rank, runtimes), info.world_size
                )
                close_loaders(runtimes)
                plan = new_plan
                build_loaders(cfg, taskset, manifest, plan, info.rank, runtimes, positions, device)
        engine.module.set_step(step)
        present = present_tasks(taskset.demands(), step)
        t0 = time.perf_counter()
        result = run_iteration(ctx, plan, present)
        step_s = time.perf_counter() - t0
        for name in taskset.names:  # the previous step's times (zero: did not run)
            costs.update(
                name,
                float(result.task_seconds[runtimes[name].index]),
                taskset.active[name].batch_size,
            )
        done = step + 1
        record = step_record(done, result, taskset, present, step_s, float(engine.get_lr()[0]))
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if metrics is not None and done % cfg.trainer.log_every == 0:
            metrics.write(record)
            run.log(record, done)
        if info.is_main and done % cfg.logger.heatmap_every == 0:
            usage = engine.module.lego_usage().cpu().numpy()
            run.log_heatmap("lego_usage", render_usage(usage, taskset.names), done)
        if result.stop or done % cfg.trainer.checkpoint_every == 0 or done == cfg.trainer.max_steps:
            extra = {"costs": costs.state_dict(), "plan": plan_to_state(plan), "rng": rng_state()}
            ckpt.save(
                engine,
                run_dir,
                done,
                ckpt.gather_positions(local_positions(plan, info.rank, runtimes), info.world_size),
                run.id,
                topology,
                cfg.trainer.keep_checkpoints,
                info.is_main,
                extra,
                named,
            )
        if result.stop:
            stopped_at = done
            break
    bar.close()
    close_loaders(runtimes)
    if stopped_at is not None:
        if info.is_main:
            waited = time.monotonic() - preempt.received_at if preempt.raised else float("nan")
            print(
                f"preempted: stopped after step {stopped_at} with a complete checkpoint; "
                f"signal {preempt.signal_name or '(received on another rank)'} to checkpoint on "
                f"disk took {waited:.2f}s. Run the same command again to resume.",
                flush=True,
            )
        if metrics is not None:
            metrics.close()
        run.finish()
        shutdown_distributed()
        return

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
