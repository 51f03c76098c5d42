"""launcher=deepspeed: DeepSpeed's launcher starts one worker per hostfile slot.

Every worker runs `python -m gppf_dist.cli.worker <run.dir>/config.yaml` (Hydra ran once, in
gppf-train), with `--no_local_rank`: workers read LOCAL_RANK from the environment. Without
`launcher.hostfile`, a one-line hostfile for this machine (`localhost slots=<nproc>`) is written
to the run directory. A single host runs without ssh; several hosts go through DeepSpeed's PDSH
path, which needs the run directory on a filesystem every host sees, and which forwards only a
few variables: WANDB_*, HYDRA_*, WDS_*, GPPF_*, DS_ACCELERATOR, OMP_NUM_THREADS and PYTHONPATH
are therefore written to an env file (DS_ENV_FILE, merged with the user's ./.deepspeed_env)
that the launcher exports on every host.

DeepSpeed is started as a program (`python -m deepspeed.launcher.runner`), not imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gppf_dist.config.hostfile import Host, planned_hosts
from gppf_dist.config.schema import LauncherSection
from gppf_dist.dist.env import free_port
from gppf_dist.launch.local import WorkersFailedError

FORWARDED = re.compile(r"^(WANDB_|HYDRA_|WDS_|GPPF_|DS_ACCELERATOR$|OMP_NUM_THREADS$|PYTHONPATH$)")


def forwarded_env(environ: dict[str, str], user_file: Path | None) -> str:
    """The DS_ENV_FILE body: the user's `.deepspeed_env` lines, then the variables to forward."""
    lines = user_file.read_text().splitlines() if user_file and user_file.is_file() else []
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
    master = launcher.master_addr or hosts[0].name
    if master == "localhost":
        master = "127.0.0.1"
    cmd = [python, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile)]
    cmd += ["--master_addr", master, "--master_port", str(port)]
    if len(hosts) == 1:
        cmd += ["--no_ssh", "--node_rank", "0"]  # this machine only: no ssh, no pdsh
    return cmd + ["--no_local_rank", "--module", "gppf_dist.cli.worker", str(config_path)]


def launch_deepspeed(launcher: LauncherSection, config_path: Path) -> None:
    run_dir = config_path.parent
    hosts = planned_hosts(launcher)
    hostfile = Path(launcher.hostfile) if launcher.hostfile else run_dir / "hostfile"
    if launcher.hostfile is None:
        hostfile.write_text(f"localhost slots={launcher.nproc}\n")
    env = dict(os.environ)
    env.setdefault("HYDRA_FULL_ERROR", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    if not _has_gpu():
        env.setdefault("DS_ACCELERATOR", "cpu")
    env_file = run_dir / "deepspeed_env"
    env_file.write_text(forwarded_env(env, Path.cwd() / ".deepspeed_env"))
    env["DS_ENV_FILE"] = str(env_file)
    port = launcher.master_port or free_port()
    cmd = deepspeed_command(launcher, hosts, hostfile, config_path, sys.executable, port)
    print(
        f"gppf-train: DeepSpeed launcher, {len(hosts)} host(s), "
        f"{sum(h.slots for h in hosts)} worker(s), hostfile {hostfile}",
        file=sys.stderr,
        flush=True,
    )
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        raise WorkersFailedError(f"the DeepSpeed launcher exited with status {code}; see above")


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
