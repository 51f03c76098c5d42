"""launcher=deepspeed: DeepSpeed's launcher starts one worker per hostfile slot.

Every worker runs `python -m gppf_dist.cli.worker <run.dir>/config.yaml` (Hydra ran once, in
gppf-train), with `--no_local_rank`: workers read LOCAL_RANK from the environment. Without
`launcher.hostfile`, a one-line hostfile for this machine (`localhost slots=<nproc>`) is written
to the run directory.

One host: DeepSpeed starts the workers here, without ssh (whatever the host is called), with the
rendezvous on 127.0.0.1 and this environment. Several hosts: DeepSpeed's PDSH path, which needs
the run directory on a filesystem every host sees and forwards only a few variables, so the
user's WANDB_*, HYDRA_*, WDS_*, GPPF_*, DS_ACCELERATOR and OMP_NUM_THREADS go into an env file
(DS_ENV_FILE, readable by the owner only, as W&B keys may be among them), after the lines of
~/.deepspeed_env and ./.deepspeed_env, which DS_ENV_FILE would otherwise hide. Defaults gppf
sets for itself (DS_ACCELERATOR=cpu on a machine without GPU) are never forwarded: the head
node's hardware says nothing about the workers'.

DeepSpeed is started as a program (`python -m deepspeed.launcher.runner`), not imported.

`DeepSpeedLauncher` is this launch behind the `Launcher` protocol (`base.py`): one worker per
hostfile slot. Its workers count as elsewhere even on one host (they check their GPU decoder at
the first image).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gppf_dist.config.hostfile import Host, planned_hosts
from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.dist.env import free_port
from gppf_dist.launch.base import (
    Outcome,
    WorkersFailedError,
    World,
    announce_workers,
    launcher_options,
)
from gppf_dist.launch.command import command_name

FORWARDED = re.compile(r"^(WANDB_|HYDRA_|WDS_|GPPF_|DS_ACCELERATOR$|OMP_NUM_THREADS$)")
MULTI_HOST_PORT = 29500
"""launcher.master_port=0 with several hosts: a free port cannot be checked on the master."""


def forwarded_env(environ: dict[str, str], user_files: list[Path]) -> str:
    """The DS_ENV_FILE body: the user's `.deepspeed_env` lines, then the variables to forward."""
    lines = [line for f in user_files if f.is_file() for line in f.read_text().splitlines()]
    lines += [f"{k}={v}" for k, v in sorted(environ.items()) if FORWARDED.match(k)]
    return "\n".join(lines) + "\n"


def deepspeed_command(
    launcher: LauncherSection,
    hosts: list[Host],
    hostfile: Path,
    config_path: Path,
    python: str,
    port: int,
) -> list[str]:
    master = launcher.master_addr or (hosts[0].name if len(hosts) > 1 else "127.0.0.1")
    cmd = [python, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile)]
    cmd += ["--master_addr", master, "--master_port", str(port)]
    if len(hosts) == 1:
        cmd += ["--no_ssh", "--node_rank", "0"]  # this machine only: no ssh, no pdsh
    return cmd + ["--no_local_rank", "--module", "gppf_dist.cli.worker", str(config_path)]


def launch_environment(
    hosts: list[Host], run_dir: Path, environ: dict[str, str], master_port: int
) -> tuple[dict[str, str], int]:
    """The launcher's environment and rendezvous port (see the module docstring)."""
    env = dict(environ)
    if len(hosts) > 1:
        env_file = run_dir / "deepspeed_env"
        env_file.touch(mode=0o600)
        env_file.chmod(0o600)
        user_files = [Path.home() / ".deepspeed_env", Path.cwd() / ".deepspeed_env"]
        env_file.write_text(forwarded_env(env, user_files))
        env["DS_ENV_FILE"] = str(env_file)
        port = master_port or MULTI_HOST_PORT
    else:
        port = master_port or free_port()
        if not _has_gpu():
            env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env, port


def launch_deepspeed(launcher: LauncherSection, config_path: Path) -> None:
    run_dir = config_path.parent
    hosts = planned_hosts(launcher)
    hostfile = Path(launcher.hostfile) if launcher.hostfile else run_dir / "hostfile"
    if launcher.hostfile is None:
        hostfile.write_text(f"localhost slots={launcher.nproc}\n")
    env, port = launch_environment(hosts, run_dir, dict(os.environ), launcher.master_port)
    cmd = deepspeed_command(launcher, hosts, hostfile, config_path, sys.executable, port)
    print(
        f"{command_name()}: DeepSpeed launcher, {len(hosts)} host(s), "
        f"{sum(h.slots for h in hosts)} worker(s), hostfile {hostfile}",
        file=sys.stderr,
        flush=True,
    )
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        raise WorkersFailedError(f"the DeepSpeed launcher exited with status {code}; see above")


class DeepSpeedLauncher:
    """launcher=deepspeed: DeepSpeed's launcher, one worker per slot of `launcher.hostfile`."""

    name = "deepspeed"

    def check(self, section: LauncherSection) -> LauncherSection:
        launcher_options(section, {})
        return section

    def world(self, section: LauncherSection, env_world_size: int | None) -> World:
        where = section.hostfile or f"launcher.nproc={section.nproc}"
        size = sum(h.slots for h in planned_hosts(section))  # reads and checks the hostfile
        return World(size, f"the slots of {where}", here=False)

    def launch(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        tool: str,
        worker: Callable[[RunConfig], None],
    ) -> Outcome:
        announce_workers(tool, cfg)
        launch_deepspeed(cfg.launcher, config_path)
        return Outcome.FINISHED


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
