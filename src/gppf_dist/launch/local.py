"""launcher=local: the torch elastic agent starts `nproc` worker processes on this machine.

Workers are fresh interpreters running `python -m gppf_dist.cli.worker <config.yaml>`; the agent
sets RANK/WORLD_SIZE/MASTER_* and restarts all of them (up to `max_restarts`) if one fails, in
which case they resume from the newest complete checkpoint.

Restarts need a fresh store per attempt: by default the agent shares one TCPStore with the
workers for its whole life, so a restarted gloo group would read the dead attempt's addresses
("Connection refused" in connectFullMesh; pytorch/pytorch#135712, #167288).
TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 makes rank 0 of each attempt host its own store on a new port.

Signals (workers run in sessions of their own, so only this process sees a terminal's Ctrl-C):
SIGTERM, SIGHUP and SIGQUIT are the agent's: it passes the signal on to the workers and waits
for them (SIGTERM: they checkpoint and exit 0; `health/preempt.py`). SIGINT is ours
(`interrupts.py`): the first one says so and stops the workers the same way, a second one kills
them at once. Either way `launch_local` raises `RunInterruptedError` and the caller reports.

`LocalLauncher` is this launch behind the `Launcher` protocol (`base.py`): `nproc` x `nnodes`
workers, all on this machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.dist.env import free_port
from gppf_dist.health.heartbeat import HEARTBEAT_DIR, local_directory
from gppf_dist.launch.base import (
    Outcome,
    WorkersFailedError,
    World,
    announce_workers,
    launcher_options,
)
from gppf_dist.launch.interrupts import RunInterruptedError, agent_signals

SHUTDOWN_TIMEOUT_S = 300
"""How long the agent waits for signalled workers (a step and a checkpoint) before SIGKILL;
TORCH_ELASTIC_SHUTDOWN_TIMEOUT overrides it. torch before 2.13 has no such setting: its agent
waits 30 s."""


def launch_config(**settings: Any) -> LaunchConfig:
    """`LaunchConfig(**settings)` without the settings this torch's `LaunchConfig` lacks
    (`shutdown_timeout` is new in torch 2.13; we support 2.11 on)."""
    known = {f.name for f in fields(LaunchConfig)}
    return LaunchConfig(**{k: v for k, v in settings.items() if k in known})


@contextlib.contextmanager
def _node_beats_removed(run_dir: Path) -> Iterator[None]:
    """The run's node-local heartbeat folder goes when the launch ends, however it ends: a
    failed run's workers leave their beats there for `describe_failures`, which has read them by
    then (the shared folder keeps the node's file)."""
    try:
        yield
    finally:
        shutil.rmtree(local_directory(run_dir / HEARTBEAT_DIR), ignore_errors=True)


def launch_local(launcher: LauncherSection, config_path: Path) -> None:
    if launcher.max_restarts:
        os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    port = launcher.master_port or free_port()
    config = launch_config(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=launcher.nproc,
        run_id=f"gppf-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{port}",
        rdzv_configs={"is_host": True},
        max_restarts=launcher.max_restarts,
        monitor_interval=0.5,
        signals_to_handle="SIGTERM,SIGHUP,SIGQUIT",
        shutdown_timeout=int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT_S)),
    )
    with agent_signals() as stopped, _node_beats_removed(config_path.parent):
        try:
            elastic_launch(config, entrypoint=sys.executable)(
                "-m", "gppf_dist.cli.worker", str(config_path)
            )
        except ChildFailedError as err:
            if stopped.signal is not None:
                raise RunInterruptedError(stopped.signal) from None
            from gppf_dist.launch.failures import describe_failures

            last = describe_failures(config_path.parent, config.run_id, err.failures)
            raise WorkersFailedError(
                f"a worker failed; its error is printed above.\n{err}\n{last}"
            ) from None
        except SignalException as err:
            raise RunInterruptedError(err.sigval) from None


class LocalLauncher:
    """launcher=local: the torch elastic agent, `nproc` workers on this machine."""

    name = "local"

    def check(self, section: LauncherSection) -> LauncherSection:
        launcher_options(section, {})
        return section

    def world(self, section: LauncherSection, env_world_size: int | None) -> World:
        origin = f"launcher.nproc={section.nproc} x launcher.nnodes={section.nnodes}"
        return World(section.nproc * section.nnodes, origin, here=True)

    def launch(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        tool: str,
        worker: Callable[[RunConfig], None],
    ) -> Outcome:
        announce_workers(tool, cfg)
        launch_local(cfg.launcher, config_path)
        return Outcome.FINISHED
