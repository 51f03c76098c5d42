"""W&B from rank 0 behind a tiny interface; other ranks (and logger=none) get a NullRun.

The run id is chosen once per run directory and kept in the checkpoint's client state and in
`<run.dir>/wandb_run_id`, so a restarted or requeued job continues the same W&B run.
`global_step` is the step metric, so a resumed run never trips W&B's monotonic-step check.
If `wandb.init` fails (or times out), training goes on with metrics.jsonl only and a warning:
monitoring must never take a run down. Offline runs are read back by `wandb_file.py`.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Run(Protocol):
    id: str

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_heatmap(self, key: str, image: np.ndarray, step: int) -> None: ...

    def finish(self) -> None: ...


class NullRun:
    id = ""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_heatmap(self, key: str, image: np.ndarray, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbRun:
    def __init__(self, run: Any) -> None:
        self._run = run
        self.id = str(run.id)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._run.log({**metrics, "global_step": step})

    def log_heatmap(self, key: str, image: np.ndarray, step: int) -> None:
        import wandb

        caption = f"lego usage at step {step}: rows are tasks, column blocks are layers"
        self._run.log({key: wandb.Image(image, caption=caption), "global_step": step})

    def finish(self) -> None:
        self._run.finish()


def _run_id(run_dir: Path, saved_id: str | None) -> str:
    """The checkpoint's id wins, then `<run.dir>/wandb_run_id`, else a new one (then saved)."""
    id_file = run_dir / "wandb_run_id"
    known = id_file.read_text().strip() if id_file.is_file() else ""
    run_id = saved_id or known or secrets.token_hex(4)
    if run_id != known:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = id_file.with_suffix(".tmp")
        tmp.write_text(run_id + "\n")
        tmp.replace(id_file)
    return run_id


def open_run(
    *,
    enabled: bool,
    mode: str,
    project: str,
    entity: str | None,
    name: str,
    run_dir: Path,
    config: dict[str, Any],
    saved_id: str | None,
) -> Run:
    """Rank 0 calls this with enabled=True; everything else gets a NullRun."""
    if not enabled or mode == "disabled":
        return NullRun()
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run_id = _run_id(run_dir, saved_id)
    try:
        run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            config=config,
            settings=wandb.Settings(init_timeout=120, console="off"),
        )
    except Exception as err:  # noqa: BLE001 - any W&B failure: keep training, say so
        print(f"W&B disabled for this run: wandb.init failed: {err}", file=sys.stderr, flush=True)
        return NullRun()
    run.define_metric("global_step")
    run.define_metric("*", step_metric="global_step")
    run.define_metric("eval/*", step_metric="global_step", summary="last")
    return WandbRun(run)
