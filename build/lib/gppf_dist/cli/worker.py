"""Worker entry point: `python -m gppf_dist.cli.worker <run.dir>/config.yaml`.

Reads the resolved config written by gppf-train; never runs Hydra (one config, one run dir).
A finished worker leaves through `finish.exit_finished`, an interrupted one (SIGINT) quietly
with status 130 through `finish.quiet_interrupt` (see there why).
"""

from __future__ import annotations

import os
import sys

from gppf_dist.cli.finish import exit_finished, quiet_interrupt


def quiet_other_ranks() -> None:
    """Start-up lines are rank 0's: DeepSpeed prints its shared-memory op banner from every
    process that initializes its communication; only rank 0 keeps it."""
    if os.environ.get("RANK", "0") == "0":
        return
    import contextlib
    import importlib
    import io

    ds_torch = importlib.import_module("deepspeed.comm.torch")  # not `deepspeed.comm`'s torch
    build = ds_torch.build_shm_op

    def quiet_build() -> object:
        with contextlib.redirect_stdout(io.StringIO()):
            return build()

    ds_torch.build_shm_op = quiet_build


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m gppf_dist.cli.worker <config.yaml>")
    with quiet_interrupt():
        from gppf_dist.config.load import load_run_config
        from gppf_dist.engine.worker import run_worker

        quiet_other_ranks()
        run_worker(load_run_config(args[0]))


if __name__ == "__main__":
    main()
    exit_finished()
