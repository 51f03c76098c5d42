"""What a launcher is: the `Launcher` protocol `gppf-train` starts its workers through, the world
a launcher plans, how a launch ended, and the errors it reports with.

A launcher is an object with a `name` (the value of `launcher.name` that picks it) and three
methods, which `gppf-train` (`cli/train.py`) calls in this order:

1. `check(section)`, before anything else reads the `launcher` section: the section as this
   launcher runs it (keys it derives filled in, e.g. Slurm's `nnodes` from `nodes`); a value it
   refuses raises ValueError naming the key and the value (gppf-train exits 2, no worker starts).
2. `world(section, env_world_size)`: how many workers the launch starts, where that number comes
   from (for messages), and whether they all run on this machine; the run's checks use it
   (`preflight/validate.py`: the EP size divides it, a resumed checkpoint fits it).
3. `launch(cfg, config_path, tool=..., worker=...)`, once `<run.dir>/config.yaml` is written:
   start the workers on that file (`python -m gppf_dist.cli.worker <config.yaml>`, or
   `worker(cfg)` in this process) and return how the launch ended. A worker that failed, or a
   submission refused, raises a `LaunchError` (gppf-train prints it and exits 1); workers stopped
   by a signal raise `interrupts.RunInterruptedError` (gppf-train prints the step reached and
   the command that resumes).

A launcher's own keys beyond the common ones of `LauncherSection` go in `launcher.options`;
`launcher_options` reads them, refusing a key the launcher does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.config.suggest import did_you_mean


class LaunchError(RuntimeError):
    """The launch failed (a worker, the launcher program, a submission): gppf-train prints the
    message after its name and exits with status 1."""


class WorkersFailedError(LaunchError):
    """A worker ended with an error; its own output says which above this message."""


class Outcome(Enum):
    """How `Launcher.launch` ended, so gppf-train knows what is left to do."""

    FINISHED = "finished"
    """The workers ran to the end: rank 0 prints the run's per-task table."""
    SUBMITTED = "submitted"
    """The workers run elsewhere, later (a queued job, whose log gets the table): nothing more."""
    IN_PROCESS = "in_process"
    """This process was a worker and finished: the table on rank 0, then the worker's exit
    (`finish.exit_finished`)."""


@dataclass(frozen=True)
class World:
    """The workers a launch plans."""

    size: int
    """The world size: workers (ranks) the launch starts, or joins."""
    origin: str
    """Where the size comes from, for messages, e.g. `launcher.nproc=2 x launcher.nnodes=1`."""
    here: bool
    """Every worker runs on this machine, so a check of its hardware made before the launch
    (the GPU decoder) holds for them; otherwise the workers check on their nodes."""


@runtime_checkable
class Launcher(Protocol):
    """Starts one run's workers; see the module docstring for when each method is called."""

    name: str
    """The value of `launcher.name` that picks this launcher."""

    def check(self, section: LauncherSection) -> LauncherSection:
        """The section as this launcher runs it; ValueError naming key and value otherwise."""
        ...

    def world(self, section: LauncherSection, env_world_size: int | None) -> World:
        """The planned world for a checked section; `env_world_size` is this process's
        WORLD_SIZE when a launcher around gppf-train set one."""
        ...

    def launch(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        tool: str,
        worker: Callable[[RunConfig], None],
    ) -> Outcome:
        """Start the workers on `config_path` (`tool` names the command in lines printed;
        `worker(cfg)` runs one worker in this process) and return how the launch ended."""
        ...


def launcher_options(section: LauncherSection, known: Mapping[str, Any]) -> dict[str, Any]:
    """`launcher.options` over the launcher's defaults `known`; ValueError naming
    `launcher.options.<key>` and the nearest known key for a key not in `known`."""
    for key, value in section.options.items():
        if key not in known:
            hint = did_you_mean(key, known) if known else ": it takes no options"
            raise ValueError(
                f"`launcher.options.{key}`={value!r} is not an option of "
                f"launcher={section.name}{hint}"
            )
    return {**known, **section.options}


def announce_workers(tool: str, cfg: RunConfig) -> None:
    """The line a launcher prints before it starts workers from this process."""
    workers = cfg.launcher.nproc * cfg.launcher.nnodes
    print(
        f"{tool}: starting {workers} worker{'s' * (workers != 1)} "
        f"(launcher={cfg.launcher.name}); run dir {Path(cfg.run.dir)}",
        flush=True,
    )
