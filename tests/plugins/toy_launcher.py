"""A launcher of our own, whole in this one file: `launcher.name=subprocesses` starts
`launcher.nproc` plain worker processes on this machine, with no agent around them.

Named in a run's `plugins=[<this file>]`, it is imported in every process before the config is
checked and registers itself; gppf-train then checks, plans and launches through it like a
built-in launcher. Each worker is `python -m gppf_dist.cli.worker <run.dir>/config.yaml` with
the variables a launcher sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT). When one fails the others are killed (they would otherwise wait in a collective
until `parallel.timeout_s`), and the failure is a `WorkersFailedError`, as for launcher=local.
Its one option, `launcher.options.banner`, starts the line it prints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.dist.env import free_port
from gppf_dist.launch.base import Outcome, WorkersFailedError, World, launcher_options
from gppf_dist.launch.interrupts import RunInterruptedError
from gppf_dist.launch.registry import register_launcher

OPTIONS = {"banner": "subprocesses launcher"}
"""`launcher.options` this launcher knows, with their defaults."""

POLL_S = 0.2


class SubprocessesLauncher:
    name = "subprocesses"

    def check(self, section: LauncherSection) -> LauncherSection:
        launcher_options(section, OPTIONS)
        if section.nnodes != 1:
            raise ValueError(
                f"`launcher.nnodes`={section.nnodes}: launcher=subprocesses runs on this "
                "machine only (1)"
            )
        return section

    def world(self, section: LauncherSection, env_world_size: int | None) -> World:
        return World(section.nproc, f"launcher.nproc={section.nproc}", here=True)

    def launch(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        tool: str,
        worker: Callable[[RunConfig], None],
    ) -> Outcome:
        banner = launcher_options(cfg.launcher, OPTIONS)["banner"]
        nproc = cfg.launcher.nproc
        port = cfg.launcher.master_port or free_port()
        print(
            f"{banner}: {tool} starts {nproc} worker processes (rendezvous 127.0.0.1:{port})",
            flush=True,
        )
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "gppf_dist.cli.worker", str(config_path)],
                env=_rank_env(rank, nproc, port),
            )
            for rank in range(nproc)
        ]
        try:
            failed = _wait(workers)
        except KeyboardInterrupt:  # Ctrl-C reached the workers too: they stop and leave
            for proc in workers:
                proc.wait()
            raise RunInterruptedError(signal.SIGINT) from None
        if failed:
            statuses = ", ".join(f"rank {rank}: exit status {code}" for rank, code in failed)
            raise WorkersFailedError(f"a worker failed; its error is printed above ({statuses})")
        return Outcome.FINISHED


def _rank_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _wait(workers: list[subprocess.Popen[bytes]]) -> list[tuple[int, int]]:
    """Wait for every worker; after the first failure, kill the rest (SIGTERM would ask them for
    a preemption checkpoint, which needs the failed peer). The failed (rank, status)."""
    while any(proc.poll() is None for proc in workers):
        failed = [(r, p.returncode) for r, p in enumerate(workers) if p.returncode]
        if failed:
            for proc in workers:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            return failed
        time.sleep(POLL_S)
    return [(rank, proc.returncode) for rank, proc in enumerate(workers) if proc.returncode]


register_launcher(SubprocessesLauncher())
