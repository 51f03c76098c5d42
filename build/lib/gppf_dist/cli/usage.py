"""Help for the `gppf-*` commands: every one answers `-h`/`--help` with its keys or flags and an
example (tests/integration/test_cli_help.py runs each console script so).

The key=value tools (`gppf-model`, `gppf-extract`, `gppf-export`) print their module docstring
(`wants_help`); the argparse tools end each (sub)command's help with `examples(...)`.
"""

from __future__ import annotations

import argparse
from typing import Any

HELP_FLAGS = ("-h", "--help")


def wants_help(args: list[str], doc: str | None) -> bool:
    """True (after printing `doc`) when `args` hold `-h` or `--help`."""
    if not any(arg in HELP_FLAGS for arg in args):
        return False
    print((doc or "").strip(), flush=True)
    return True


def examples(*lines: str) -> dict[str, Any]:
    """argparse keywords that end a (sub)command's `--help` with these example command lines."""
    listed = "\n".join(f"  {line}" for line in lines)
    return {
        "epilog": f"examples:\n{listed}",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
