"""A training worker in three acts: build, train, finish.

Started once per rank by the launcher with the resolved config; never runs Hydra. Everything
the worker opens (process group, loaders, metrics file, W&B run) is registered on one exit
stack as it is opened, so it is closed exactly once, in reverse order, also when a step raises.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from gppf_dist.checkpoint.client_state import (
    ClientState,
    gather_positions,
    restore_rng,
    rng_state,
    seed_everything,
)
from gppf_dist.checkpoint.layout import checkpoints_dir
from gppf_dist.checkpoint.resume import select_resume
from gppf_dist.checkpoint.saving import CheckpointSaveError
from gppf_dist.checkpoint.store import Checkpointer
from gppf_dist.config.load import to_container
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.format.manifest import Manifest
from gppf_dist.data.load.task_loaders import TaskLoaders
from gppf_dist.dist.env import (
    RankInfo,
    configure_cuda_math,
    init_distributed,
    leave_distributed,
    pick_device,
    rank_info_from_env,
)
from gppf_dist.dist.peak import device_peak_tflops
from gppf_dist.dist.threads import configure_threads
from gppf_dist.engine.assemble import AssembledStep, assemble_step
from gppf_dist.engine.deepspeed import destroy_groups
from gppf_dist.engine.evaluate import evaluate
from gppf_dist.engine.experts import locality_affinity, resumed_placement
from gppf_dist.engine.step import TaskRuntime, run_iteration
from gppf_dist.finetune.backbone import prepare_model
from gppf_dist.health.nonfinite import NonFiniteGuard
from gppf_dist.health.preempt import PreemptionFlag
from gppf_dist.health.watchdog import phase, watch
from gppf_dist.logging.heatmap import render_usage
from gppf_dist.logging.metrics import MetricsFile
from gppf_dist.logging.record import ModelFlops, step_record
from gppf_dist.logging.run_files import read_json, write_json_atomic
from gppf_dist.logging.wandb_run import Run, open_run
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.model.memory import training_gflop
from gppf_dist.preflight.validate import validate_run
from gppf_dist.simt.costs import CostTable
from gppf_dist.simt.objective import TaskWeights
from gppf_dist.simt.plan import Plan, present_tasks
from gppf_dist.simt.taskset import TaskSet
from gppf_dist.tasks.common import pixels


@dataclass
class Worker:
    """What the build act made and the other two acts use."""

    cfg: RunConfig
    info: RankInfo
    manifest: Manifest
    taskset: TaskSet
    model: GppfModel
    step: AssembledStep
    checkpointer: Checkpointer
    loaders: TaskLoaders
    resumed: ClientState
    costs: CostTable
    plan: Plan
    run: Run
    metrics: MetricsFile | None
    preempt: PreemptionFlag
    flops: ModelFlops | None
    """Rank 0, where a peak is known: for `model_tflops` and `mfu` in the step logs."""

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run.dir)


def run_worker(cfg: RunConfig) -> None:
    with ExitStack() as opened:
        worker = build(cfg, opened)
        stopped_at = train(worker)
        finish(worker, stopped_at)


# ---- act 1: build ---------------------------------------------------------------------------


def _leave_groups(exc_type: type[BaseException] | None, exc: object, tb: object) -> bool:
    """The last thing a worker does: leave the process groups (`dist/env.py`; a barrier first
    only if the worker finished), through DeepSpeed, which drops its references to them."""
    leave_distributed(finished=exc_type is None, destroy=destroy_groups)
    return False  # never swallows the exception it leaves on


def build(cfg: RunConfig, opened: ExitStack) -> Worker:
    """Process group, checks, tasks, the assembled step, resume, loaders, logging."""
    opened.enter_context(watch(cfg))  # heartbeats; names a rank that stops answering
    threads = configure_threads(cfg.trainer.cpu_threads)
    device = pick_device(cfg.trainer.device, rank_info_from_env())
    info = init_distributed(cfg.parallel.backend, device, cfg.parallel.timeout_s)
    opened.push(_leave_groups)
    if info.is_main:
        # the pixel kernels' backend (tasks/common/pixels.py): a resume is bit-exact only on
        # the same one
        print(
            f"workers: {info.world_size} on {device.type}; rank 0 runs {threads}; "
            f"images resampled by {pixels.BACKEND}",
            flush=True,
        )
    configure_cuda_math(device, tf32=cfg.trainer.tf32, cudnn_benchmark=cfg.trainer.cudnn_benchmark)
    # The launcher checked the shard files before it started the workers (validate.py); the
    # decoder is checked here, on the machine that decodes (workers_here).
    manifest = validate_run(cfg, info.world_size, check_files=False, workers_here=True)
    seed_everything(cfg.trainer.seed)
    preempt = PreemptionFlag().install()

    taskset = TaskSet.build(cfg, manifest.label_spaces())
    model = build_model(cfg.model, taskset.specs)
    if cfg.finetune.enabled:  # the export's backbone, the chosen route, the tune mode
        prepare_model(model, cfg.finetune)
    model = model.to(device)
    # the checkpoint to resume, checksummed once with every rank reading a share
    resume_from = select_resume(checkpoints_dir(cfg.run.dir), cfg.resume)
    placement: tuple[tuple[int, ...], ...] = ()
    if cfg.parallel.ep_size > 1 and cfg.parallel.place_legos:
        names = model.router.task_names
        placement = resumed_placement(cfg, resume_from, taskset.batch_sizes, names, info.is_main)
    tasks = {
        name: TaskRuntime(
            i,
            taskset.types[name],
            TaskWeights(t.weight, t.batch_size),
            t.max_local_batch,
            taskset.group(name),
        )
        for i, (name, t) in enumerate(taskset.active.items())
    }
    loaders = TaskLoaders(cfg, manifest, taskset.specs, taskset.types, device)
    opened.callback(loaders.close)
    step = assemble_step(
        cfg, model, tasks, taskset.input_sizes, loaders.active,
        rank=info.rank, world_size=info.world_size, device=device, placement=placement,
        stop_requested=lambda: preempt.raised,
    )  # fmt: skip
    checkpointer = step.checkpointer(cfg, info.is_main)

    resumed = checkpointer.load(resume_from) or ClientState(0, {}, None, info.world_size)
    if resumed.step > 0:
        restore_rng(resumed.rng)
        if info.is_main:
            print(f"resuming from checkpoint at step {resumed.step} in "
                  f"{checkpointer.directory}", flush=True)  # fmt: skip
    costs = CostTable.from_state(resumed.costs)
    plan = Plan.from_state(resumed.plan, info.world_size) or taskset.plan(costs, info.world_size)
    loaders.open(plan.rank_work(info.rank), resumed.data_positions)

    run = open_run(
        enabled=info.is_main and cfg.logger.name == "wandb",
        mode=cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        name=cfg.run.name,
        run_dir=Path(cfg.run.dir),
        config=to_container(cfg),
        saved_id=resumed.wandb_run_id,
    )
    opened.callback(run.finish)
    metrics, flops = None, None
    if info.is_main:
        metrics = MetricsFile(Path(cfg.run.dir) / "metrics.jsonl", resumed.step)
        opened.callback(metrics.close)
        flops = model_flops(cfg, taskset, device, info.world_size)
    return Worker(cfg, info, manifest, taskset, model, step, checkpointer, loaders, resumed,
                  costs, plan, run, metrics, preempt, flops)  # fmt: skip


def model_flops(
    cfg: RunConfig, taskset: TaskSet, device: torch.device, world_size: int
) -> ModelFlops | None:
    """What rank 0 needs to log MFU: each task's training FLOPs per sample, counted on fake
    tensors, and the world's peak; None where no peak is known (`trainer.peak_tflops`)."""
    peak = device_peak_tflops(device, cfg.trainer.precision, cfg.trainer.peak_tflops)
    if peak is None:
        return None
    gflop = training_gflop(cfg.model, taskset.specs)
    print("training GFLOP per sample: " + ", ".join(f"{t} {g:.3g}" for t, g in gflop.items())
          + f"; MFU against {peak:g} TFLOP/s per device", flush=True)  # fmt: skip
    return ModelFlops(gflop, peak * world_size)


# ---- act 2: train ---------------------------------------------------------------------------


def train(w: Worker) -> int | None:
    """Steps from the resumed one to trainer.max_steps; the step it stopped after when a
    preemption stopped it early, else None."""
    cfg, start = w.cfg, w.resumed.step
    if start == 0 and cfg.trainer.eval_at_start:
        tasks = run_eval(w)
        if w.info.is_main:
            write_json_atomic(w.run_dir / "eval.json", {"step": 0, "tasks": tasks, "start": tasks})
    show = w.info.is_main and cfg.trainer.progress
    guard = NonFiniteGuard(cfg.trainer.max_nonfinite_steps)
    with tqdm(total=cfg.trainer.max_steps, initial=start, disable=not show, desc="train",
              dynamic_ncols=True) as bar:  # fmt: skip
        for step in range(start, cfg.trainer.max_steps):
            phase("start of step", done=step)  # re-planning, then run_iteration's own phases
            due = cfg.simt.planner == "cost" and step > start and step % cfg.simt.replan_every == 0
            if step == start or (due and replan(w)):
                w.costs.shapes_changed(step)  # its times are a warm-up's, not costs
            w.model.set_step(step)
            present = present_tasks(w.taskset.demands(), step)
            t0 = time.perf_counter()
            result = run_iteration(w.step.ctx, w.plan, present)
            step_s = time.perf_counter() - t0
            phase("logging", done=step + 1)
            w.costs.observe(
                step - 1,  # the times a step returns are its previous step's (0: idle)
                {n: float(result.task_seconds[t.index]) for n, t in w.step.ctx.tasks.items()},
                {n: w.taskset.active[n].batch_size for n in w.step.ctx.tasks},
            )
            done = step + 1
            record = step_record(
                done, result, w.taskset.batch_sizes,
                {n: t.weight for n, t in w.taskset.active.items()}, present, step_s,
                w.step.engine.lr(), w.flops,
            )  # fmt: skip
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            last = result.stop or done == bar.total
            log_step(w, done, record, last)
            guard.check(done, record, announce=w.info.is_main)
            if last or done % cfg.trainer.checkpoint_every == 0:
                # periodic saves in the background; the last (and a preemption's) waits
                save(w, done, background=cfg.trainer.checkpoint_async and not last)
            if result.stop:
                return done
    return None


def replan(w: Worker) -> bool:
    """Re-plan on the measured costs (and lego locality); reopen the loaders if it changed.
    Whether it changed."""
    per_sample = {t: w.costs.cost(t) or 0.0 for t in w.taskset.names}
    remote = w.cfg.parallel.remote_lego_cost
    affinity = locality_affinity(w.model, w.step.layout, per_sample, remote)
    new_plan = w.taskset.plan(w.costs, w.info.world_size, affinity)
    if new_plan != w.plan:
        positions = gather_positions(w.loaders.positions(), w.info.world_size)
        w.plan = new_plan
        w.loaders.open(new_plan.rank_work(w.info.rank), positions)
        return True
    return False


def log_step(w: Worker, done: int, record: dict[str, object], last: bool) -> None:
    """Every `trainer.log_every` steps, and the run's last step (or the one a preemption stops
    at), so metrics.jsonl and W&B end where the run ends."""
    if w.metrics is not None and (last or done % w.cfg.trainer.log_every == 0):
        w.metrics.write(record)
        w.run.log(record, done)
    if w.info.is_main and done % w.cfg.logger.heatmap_every == 0:
        usage = w.model.lego_usage().cpu().numpy()
        w.run.log_heatmap("lego_usage", render_usage(usage, w.taskset.names), done)


def save(w: Worker, done: int, background: bool = False) -> None:
    """Collective checkpoint after `done` steps (`background`: written while training goes on,
    `Checkpointer.save`). A failed one ends the run with its one line (from rank 0; the other
    ranks leave quietly) at this save, or for a background one at the next: the partial
    checkpoint is gone, LATEST is on the last good one, and the same command resumes from it
    once the cause is fixed."""
    phase("checkpoint save", done=done)
    state = ClientState(
        step=done,
        data_positions=gather_positions(w.loaders.positions(), w.info.world_size),
        wandb_run_id=w.run.id,
        world_size=w.info.world_size,
        costs=w.costs.state_dict(),
        plan=w.plan.to_state(),
        rng=rng_state(),
    )
    try:
        w.checkpointer.save(state, background=background)
    except CheckpointSaveError as err:
        raise SystemExit(str(err) if w.info.is_main else 1) from None


# ---- act 3: finish --------------------------------------------------------------------------


def finish(w: Worker, stopped_at: int | None) -> None:
    """After a preemption: say how to resume. After the last step: the final evaluation."""
    if stopped_at is not None:
        if w.info.is_main:
            p = w.preempt
            waited = time.monotonic() - p.received_at if p.raised else float("nan")
            print(
                f"preempted: stopped after step {stopped_at} with a complete checkpoint; "
                f"signal {p.signal_name or '(received on another rank)'} to checkpoint on "
                f"disk took {waited:.2f}s. Run the same command again to resume.",
                flush=True,
            )
        return
    w.loaders.close()
    final = run_eval(w)
    if w.info.is_main:
        eval_path = w.run_dir / "eval.json"
        start = (read_json(eval_path) or {}).get("start")
        steps = w.cfg.trainer.max_steps
        write_json_atomic(eval_path, {"step": steps, "tasks": final, "start": start})
        w.run.log({f"eval/{t}/{k}": v for t, m in final.items() for k, v in m.items()}, steps)


def run_eval(w: Worker) -> dict[str, dict[str, float]]:
    return evaluate(
        w.step.engine.module,
        root=Path(w.cfg.data.root),
        manifest=w.manifest,
        specs=w.taskset.specs,
        task_types=w.taskset.types,
        batch_size=w.cfg.trainer.eval_batch_size,
        rank=w.info.rank,
        world_size=w.info.world_size,
        device=w.step.ctx.device,
        ep=w.step.session,
        decoder=w.cfg.data.decoder,
    )
