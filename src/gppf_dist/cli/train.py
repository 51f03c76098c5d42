"""`gppf-train`: compose and validate the config once, save it, start the workers, report.

gppf-train experiment=demo                     # 2 local workers (torch elastic agent)
gppf-train experiment=demo launcher.nproc=1 trainer.max_steps=20
gppf-train experiment=demo launcher=deepspeed launcher.hostfile=launch/hostfile.example
torchrun --nproc-per-node 8 -m gppf_dist.cli.train launcher=none ...   # under a launcher
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gppf_dist.cli.start import refuse, start
from gppf_dist.config.load import save_run_config, to_run_config
from gppf_dist.config.resources import conf_dir
from gppf_dist.config.schema import RunConfig
from gppf_dist.config.suggest import check_only_names

CONF_DIR = conf_dir()


def prepare(cfg: RunConfig) -> Path | None:
    """Check the `launcher` section through the launcher it names (`launch/registry.py`),
    validate the run for the world that launcher plans (raising ValueError naming key and
    value), plan memory (`trainer.device_memory_gib`) and write `<run.dir>/config.yaml`.

    With `simt.dry_run=true`, print the plan instead and return None.
    """
    from gppf_dist.launch.registry import get_launcher
    from gppf_dist.preflight.memory_plan import plan_memory
    from gppf_dist.preflight.validate import run_label_spaces, validate_run

    launcher = get_launcher(cfg.launcher.name)  # a plugin's launcher is registered by now
    cfg.launcher = launcher.check(cfg.launcher)  # saved as checked: the workers plan alike
    check_only_names(cfg.simt.only, cfg.simt.tasks)  # with the nearest name, before the rest
    env_world = int(os.environ["WORLD_SIZE"]) if "WORLD_SIZE" in os.environ else None
    world = launcher.world(cfg.launcher, env_world)  # a hostfile is read and checked here
    world_size = world.size
    # A dry run before the corpus exists plans with the corpus spec's label spaces.
    data = not (cfg.simt.dry_run and cfg.data.spec and not has_manifest(cfg.data.root))
    # Shard files are checked once per launch: here, before workers start; with launcher=none
    # every rank runs this, and each node's local rank 0 checks them.
    check_files = int(os.environ.get("LOCAL_RANK", "0")) == 0
    manifest = validate_run(
        cfg,
        world_size,
        check_files=check_files,
        data=data,
        world_origin=world.origin,
        workers_here=world.here,
    )
    label_spaces = run_label_spaces(cfg, manifest)
    memory = plan_memory(cfg, world_size, label_spaces)  # sets max_local_batch caps
    if cfg.simt.dry_run:
        from gppf_dist.preflight.dry_run import describe_plan, print_dry_run
        from gppf_dist.simt.taskset import TaskSet

        if not data:
            print(
                f"{cfg.data.root}/manifest.json does not exist yet: planning with the label "
                f"spaces of data.spec={cfg.data.spec!r}; the data is not checked",
                flush=True,
            )
        taskset = TaskSet.build(cfg, label_spaces)
        print_dry_run(*describe_plan(cfg, world_size, taskset, memory))
        return None
    config_path = Path(cfg.run.dir) / "config.yaml"
    if int(os.environ.get("RANK", "0")) == 0:
        save_run_config(cfg, config_path)
    return config_path


def has_manifest(root: str) -> bool:
    from gppf_dist.data.format.manifest import MANIFEST_NAME

    return (Path(root) / MANIFEST_NAME).is_file()


def train(
    cfg: RunConfig,
    config_path: Path,
    after: Callable[[], None] | None = None,
    tool: str = "gppf-train",
) -> None:
    """Run the workers through the launcher `launcher.name` picks, then print the per-task
    table; the main process then calls `after` (e.g. `gppf-finetune`'s export), if the run
    finished here. `tool` names the command in the lines printed here."""
    from gppf_dist.launch.base import LaunchError, Outcome
    from gppf_dist.launch.finish import exit_finished
    from gppf_dist.launch.interrupted import report
    from gppf_dist.launch.interrupts import RunInterruptedError
    from gppf_dist.launch.registry import get_launcher
    from gppf_dist.logging.report import summary_table

    run_dir = Path(cfg.run.dir)
    launcher = get_launcher(cfg.launcher.name)
    try:
        outcome = launcher.launch(cfg, config_path, tool=tool, worker=run_worker_here)
    except LaunchError as err:
        print(f"{tool}: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    except RunInterruptedError as err:
        sys.exit(report(run_dir, cfg.trainer.max_steps, err.signal, sys.argv))
    if outcome is Outcome.SUBMITTED:
        return
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary_table(run_dir), flush=True)
        if after is not None:
            after()
    if outcome is Outcome.IN_PROCESS:
        exit_finished()


def run_worker_here(cfg: RunConfig) -> None:
    """One worker in this process (launcher=none: under torchrun, srun); the engine is
    imported only when a launcher runs a worker here."""
    from gppf_dist.engine.worker import run_worker

    run_worker(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(dcfg: DictConfig) -> None:
    try:
        cfg = to_run_config(dcfg)
        config_path = prepare(cfg)
    except ValueError as err:
        refuse("gppf-train", err)
    if config_path is not None:
        train(cfg, config_path)


def force_task_keys(args: list[str]) -> list[str]:
    """`simt.tasks.<task>.<key>=v` as `++simt.tasks.<task>.<key>=v`: tasks compose untyped
    (`config/store.py`), so a key the task's YAML leaves to its default (e.g. `cost`,
    `max_local_batch`) is set, not refused as new; `to_run_config` checks every key."""
    out = []
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" in arg and key.startswith("simt.tasks.") and key.count(".") >= 3:
            arg = "++" + arg
        out.append(arg)
    return out


def main() -> None:
    start("gppf-train", "starting the workers", _hydra_main, rewrite=force_task_keys)


if __name__ == "__main__":
    main()
