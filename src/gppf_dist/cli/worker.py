"""Worker entry point: `python -m gppf_dist.cli.worker <run.dir>/config.yaml`.

Reads the resolved config written by gppf-train; never runs Hydra (one config, one run dir).
A finished worker leaves through `finish.exit_finished` (see there why).
"""

from __future__ import annotations

import sys

from gppf_dist.cli.finish import exit_finished
from gppf_dist.config.load import load_run_config
from gppf_dist.engine.worker import run_worker


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m gppf_dist.cli.worker <config.yaml>")
    run_worker(load_run_config(args[0]))


if __name__ == "__main__":
    main()
    exit_finished()
