"""How the Hydra apps that start a run (`gppf-train`, `gppf-finetune`) begin and end early.

Shared so that both say the same things the same way: the first line within a second, before
the heavy imports (torch, DeepSpeed, Hydra's composition), so a user sees the command was taken;
a misspelled key or group choice refused before Hydra runs, with status 2 and the nearest known
name (Hydra would list every option, or accept a `+key` that changes nothing); a launcher's own
keys taken as `launcher.options.<key>=<value>`, without Hydra's `+` (the launcher refuses a key
it does not know: `launch/base.py:launcher_options`); and a Ctrl-C that arrives before the
workers do (imports, composition, route selection) ending with status 130 and one line instead
of a traceback. Once the workers run, `train.train` reports the interruption itself
(`launch/interrupted.py`: the step reached and the command that resumes).

Module-level imports stay light: this runs before the first line is printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from gppf_dist.config.resources import conf_dir
from gppf_dist.config.schema import RunConfig
from gppf_dist.config.store import register_schema
from gppf_dist.config.suggest import check_group_choices, check_override_keys

INFO_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "--resolve", "-sc",
              "--shell-completion")  # fmt: skip
"""Hydra's flags that print something and start nothing."""


def announce(tool: str, what: str) -> None:
    """The first line, before the heavy imports: what is being checked and started (rank 0
    only; not for Hydra's own flags such as --help or --cfg)."""
    args = sys.argv[1:]
    if int(os.environ.get("RANK", "0")) != 0 or any(a.split("=")[0] in INFO_FLAGS for a in args):
        return
    given = " ".join(args) or "the defaults"
    print(f"{tool}: checking the configuration ({given}), then {what}", flush=True)


def refuse(tool: str, err: ValueError) -> NoReturn:
    """A configuration error: one line naming the tool, status 2 (as Hydra's usage errors)."""
    print(f"{tool}: configuration error: {err}", file=sys.stderr, flush=True)
    sys.exit(2)


OPEN_KEYS = "launcher.options."
"""Keys under a mapping the schema leaves open, which Hydra would refuse to add without `+`."""


def force_open_keys(args: list[str]) -> list[str]:
    """`launcher.options.<key>=v` as `++launcher.options.<key>=v` (added, or set if a YAML set
    it); other arguments as given."""
    return ["++" + a if "=" in a and a.startswith(OPEN_KEYS) else a for a in args]


def start(
    tool: str,
    what: str,
    app: Callable[[], None],
    rewrite: Callable[[list[str]], list[str]] | None = None,
) -> None:
    """Announce, check the command line's keys and group choices against `RunConfig` and
    `conf/`, give a launcher's own keys their `++`, let `rewrite` adapt the arguments (or
    refuse them with ValueError), then run the Hydra `app`. A configuration error exits 2; a
    Ctrl-C not handled further in exits 130."""
    announce(tool, what)
    try:
        check_group_choices(sys.argv[1:], conf_dir())
        check_override_keys(sys.argv[1:], RunConfig, conf_dir())
        sys.argv[1:] = force_open_keys(sys.argv[1:])
        if rewrite is not None:
            sys.argv[1:] = rewrite(sys.argv[1:])
    except ValueError as err:
        refuse(tool, err)
    try:
        register_schema()
        app()
    except KeyboardInterrupt:
        from gppf_dist.launch.finish import exit_interrupted

        print(f"{tool}: interrupted", file=sys.stderr, flush=True)
        exit_interrupted()
