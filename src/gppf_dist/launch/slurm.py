"""launcher=slurm: submit `launch/slurm/gppf.sbatch` for a config gppf-train already wrote.

The job's workers read `<run.dir>/config.yaml` (passed as GPPF_CONFIG), so Hydra runs once, here,
and the run dir is the configured one: a requeued job finds its checkpoints and resumes. The
sbatch script itself carries `--requeue` and `--signal=B:USR1@120`; this module only adds the
resource options from `conf/launcher/slurm.yaml` and the job's environment.

`SlurmLauncher` is this submission behind the `Launcher` protocol (`base.py`). Its check sets the
keys Slurm derives: `nnodes` from `nodes`, and with `gpus_per_node` > 0 one process per GPU
(`nproc` = `gpus_per_node`); the saved config holds them, so the job's workers plan the same world.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gppf_dist.config.resources import SBATCH_SCRIPT
from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.launch.base import LaunchError, Outcome, World, launcher_options


class SubmitError(LaunchError):
    """sbatch is missing, or refused the job."""


def sbatch_script() -> Path:
    """The sbatch script: $GPPF_SBATCH_SCRIPT, else the package's (`config/resources.py`)."""
    path = Path(os.environ.get("GPPF_SBATCH_SCRIPT", SBATCH_SCRIPT))
    if not path.is_file():
        raise SubmitError(f"sbatch script {path} not found; set GPPF_SBATCH_SCRIPT")
    return path


def sbatch_command(launcher: LauncherSection, run_dir: Path, job_name: str) -> list[str]:
    """The sbatch command line (without the script) for the launcher's options."""
    cmd = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name}",
        f"--nodes={launcher.nodes}",
        "--ntasks-per-node=1",
        f"--output={run_dir.resolve() / 'slurm-%j.out'}",
    ]
    if launcher.gpus_per_node:
        cmd.append(f"--gpus-per-node={launcher.gpus_per_node}")
    if launcher.cpus_per_task:
        cmd.append(f"--cpus-per-task={launcher.cpus_per_task}")
    for option, value in (
        ("partition", launcher.partition),
        ("time", launcher.time),
        ("account", launcher.account),
    ):
        if value:
            cmd.append(f"--{option}={value}")
    if launcher.wait:
        cmd.append("--wait")
    return cmd + list(launcher.sbatch_args)


def job_environment(launcher: LauncherSection, config_path: Path) -> dict[str, str]:
    """sbatch exports the submitting environment; add what the script needs to find the run."""
    env = dict(os.environ)
    env["GPPF_CONFIG"] = str(config_path.resolve())
    env["GPPF_PYTHON"] = env.get("GPPF_PYTHON", sys.executable)
    env["NPROC_PER_NODE"] = str(launcher.nproc)
    if launcher.gpus_per_node:
        env.pop("DS_ACCELERATOR", None)  # DeepSpeed picks CUDA on GPU nodes
    return env


def submit_slurm(launcher: LauncherSection, config_path: Path, job_name: str) -> str:
    """Submit the job; return its id (printed as soon as sbatch reports it)."""
    if shutil.which("sbatch") is None:
        raise SubmitError("launcher=slurm needs `sbatch` on PATH (run on a Slurm login node)")
    run_dir = config_path.parent
    cmd = [*sbatch_command(launcher, run_dir, job_name), str(sbatch_script())]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env=job_environment(launcher, config_path)
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    job_id = first.split(";")[0]
    if job_id.isdigit():
        print(
            f"submitted Slurm job {job_id}; log {run_dir / f'slurm-{job_id}.out'}, "
            f"run dir {run_dir}",
            flush=True,
        )
    rest, _ = proc.communicate()
    if proc.returncode != 0 or not job_id.isdigit():
        raise SubmitError(
            f"sbatch failed (exit {proc.returncode}): {' '.join(cmd)}\n{first}\n{rest}".rstrip()
        )
    return job_id


class SlurmLauncher:
    """launcher=slurm: submit the sbatch script; with `wait`, block until the job ends."""

    name = "slurm"

    def check(self, section: LauncherSection) -> LauncherSection:
        launcher_options(section, {})
        nproc = section.gpus_per_node or section.nproc  # one process per GPU on GPU nodes
        return dataclasses.replace(section, nnodes=section.nodes, nproc=nproc)

    def world(self, section: LauncherSection, env_world_size: int | None) -> World:
        origin = f"launcher.nproc={section.nproc} x launcher.nnodes={section.nnodes}"
        return World(section.nproc * section.nnodes, origin, here=False)

    def launch(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        tool: str,
        worker: Callable[[RunConfig], None],
    ) -> Outcome:
        submit_slurm(cfg.launcher, config_path, f"gppf-{cfg.run.name}")
        # without `wait` the job trains on the cluster; its table is in the job's log
        return Outcome.FINISHED if cfg.launcher.wait else Outcome.SUBMITTED
