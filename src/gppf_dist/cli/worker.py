"""Worker entry point: `python -m gppf_dist.cli.worker <run.dir>/config.yaml`.

Reads the resolved config written by gppf-train; never runs Hydra (one config, one run dir).

A worker that finished (checkpoint, metrics and W&B closed, process group destroyed) leaves
without interpreter finalization: native teardown at that point can abort the process
("terminate called without an active exception", SIGABRT, no Python frame left; seen in 3 of
87 two-worker CPU runs of the demo), which would turn a finished run into a failed one for the
launcher. A worker that raises still exits the normal way, with its traceback.
"""

from __future__ import annotations

import logging
import os
import sys

from gppf_dist.config.load import load_run_config
from gppf_dist.engine.worker import run_worker


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m gppf_dist.cli.worker <config.yaml>")
    run_worker(load_run_config(args[0]))


def _exit_finished() -> None:
    """Flush what is buffered, then end the process without finalization (see above)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
    _exit_finished()
