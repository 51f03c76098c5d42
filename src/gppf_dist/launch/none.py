"""launcher=none: this process is the worker, one rank of a world something else started
(torchrun, srun, a cluster's own launcher), which set RANK/WORLD_SIZE and the rendezvous.

Every rank runs gppf-train with the same arguments: each checks the config (each node's local
rank 0 also the shard files), rank 0 writes `<run.dir>/config.yaml`, and each runs its worker
here, passed in by gppf-train (`launch` sits below `engine`). A Ctrl-C stops the worker quietly
(`finish.quiet_interrupt`); rank 0 then prints the step reached and the command that resumes,
and the process leaves with status 130.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.launch.base import Outcome, World, launcher_options
from gppf_dist.launch.finish import quiet_interrupt
from gppf_dist.launch.interrupted import report


class InProcessLauncher:
    """launcher=none: run the worker in this process, in the world of the launcher around it."""

    name = "none"

    def check(self, section: LauncherSection) -> LauncherSection:
        launcher_options(section, {})
        return section

    def world(self, section: LauncherSection, env_world_size: int | None) -> World:
        return World(env_world_size or 1, "the launcher's WORLD_SIZE", here=True)

    def launch(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        tool: str,
        worker: Callable[[RunConfig], None],
    ) -> Outcome:
        is_main = int(os.environ.get("RANK", "0")) == 0

        def said() -> None:
            if is_main:
                report(Path(cfg.run.dir), cfg.trainer.max_steps, signal.SIGINT, sys.argv)

        with quiet_interrupt(said):
            worker(cfg)
        return Outcome.IN_PROCESS
