"""The launchers `launcher.name` picks from: the built-in ones, and any registered by a plugin.

A launcher of your own is one file: a class with the methods of `base.Launcher` and a
`register_launcher(MyLauncher())` line, named in the run config as `plugins=[path/to/file.py]`
(imported in every process before the config is checked, `config/plugins.py`) and picked with
`launcher.name=<its name>`; its own keys go in `launcher.options` (`base.launcher_options`).
"""

from __future__ import annotations

from gppf_dist.config.schema import LauncherSection
from gppf_dist.config.suggest import nearest
from gppf_dist.launch.base import Launcher, World
from gppf_dist.launch.deepspeed import DeepSpeedLauncher
from gppf_dist.launch.local import LocalLauncher
from gppf_dist.launch.none import InProcessLauncher
from gppf_dist.launch.slurm import SlurmLauncher

_LAUNCHERS: dict[str, Launcher] = {}


def register_launcher(launcher: Launcher) -> None:
    """Make `launcher` available as `launcher.name=<launcher.name>`; a name taken already is
    refused (ValueError), a built-in's included."""
    if not isinstance(launcher, Launcher):
        raise TypeError(
            f"{launcher!r} is not a launcher: it needs `name`, `check`, `world` and `launch` "
            "(gppf_dist.launch.base.Launcher)"
        )
    name = launcher.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"a launcher's `name` must be a non-empty string, not {name!r}")
    if name in _LAUNCHERS:
        raise ValueError(
            f"launcher {name!r} is registered already ({type(_LAUNCHERS[name]).__qualname__}); "
            "give yours another `name`"
        )
    _LAUNCHERS[name] = launcher


def known_launchers() -> list[str]:
    return sorted(_LAUNCHERS)


def get_launcher(name: str) -> Launcher:
    """The launcher `launcher.name` picks; ValueError naming `launcher`, the nearest known name
    and every known one otherwise."""
    launcher = _LAUNCHERS.get(name)
    if launcher is None:
        near = nearest(name, _LAUNCHERS)
        hint = f"; did you mean {near!r}?" if near else "."
        raise ValueError(
            f"`launcher`={name!r} is not a launcher{hint} Known: {', '.join(known_launchers())} "
            "(a launcher of your own: `plugins=[path/to/launcher.py] launcher.name=<its name>`)"
        )
    return launcher


def planned_world(section: LauncherSection, env_world_size: int | None) -> World:
    """The world the section's launcher plans, after its checks."""
    launcher = get_launcher(section.name)
    return launcher.world(launcher.check(section), env_world_size)


for _builtin in (LocalLauncher(), DeepSpeedLauncher(), SlurmLauncher(), InProcessLauncher()):
    register_launcher(_builtin)
