"""`-h`/`--help` for the key=value tools (`gppf-model`, `gppf-extract`, `gppf-export`).

Their help is the command module's docstring: usage, what each key means and examples (the
`--help` test in tests/integration/test_cli_help.py checks every console script shows one).
"""

from __future__ import annotations

HELP_FLAGS = ("-h", "--help")


def wants_help(args: list[str], doc: str | None) -> bool:
    """True (after printing `doc`) when `args` hold `-h` or `--help`."""
    if not any(arg in HELP_FLAGS for arg in args):
        return False
    print((doc or "").strip(), flush=True)
    return True
