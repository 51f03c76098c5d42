"""Worker entry point: `python -m gppf_dist.cli.worker <run.dir>/config.yaml`.

Reads the resolved config written by gppf-train; never runs Hydra (one config, one run dir).
A finished worker leaves through `finish.exit_finished`, an interrupted one (SIGINT) quietly
with status 130 through `finish.quiet_interrupt` (see there why).
"""

from __future__ import annotations

import sys

from gppf_dist.launch.finish import exit_finished, quiet_interrupt


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m gppf_dist.cli.worker <config.yaml>")
    with quiet_interrupt():
        from gppf_dist.config.load import load_run_config
        from gppf_dist.engine.worker import run_worker

        run_worker(load_run_config(args[0]))


if __name__ == "__main__":
    main()
    exit_finished()
