"""The name of the command this process runs as (`gppf-train`, `gppf-finetune`), for the lines
the launchers print: a fine-tune stopped by Ctrl-C says `gppf-finetune`, not `gppf-train`."""

from __future__ import annotations

import sys
from pathlib import Path


def command_name() -> str:
    """`argv[0]`'s name when it is one of our commands, else `gppf-train` (`python -m ...`)."""
    name = Path(sys.argv[0]).name
    return name if name.startswith("gppf-") else "gppf-train"
