"""W&B run-id persistence and the no-op run (no wandb process started)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gppf_dist.logging.wandb_run import NullRun, _run_id, open_run


def test_run_id_is_kept_in_the_run_dir_and_the_checkpoint_wins(tmp_path: Path) -> None:
    first = _run_id(tmp_path, None)
    assert (tmp_path / "wandb_run_id").read_text().strip() == first
    assert _run_id(tmp_path, None) == first  # a restart without a checkpoint
    assert _run_id(tmp_path, "fromckpt") == "fromckpt"  # the checkpoint's id wins...
    assert (tmp_path / "wandb_run_id").read_text().strip() == "fromckpt"  # ...and is saved


def test_disabled_or_non_main_rank_gets_a_null_run(tmp_path: Path) -> None:
    kwargs = dict(project="p", entity=None, name="n", run_dir=tmp_path, config={}, saved_id=None)
    for enabled, mode in [(False, "offline"), (True, "disabled")]:
        run = open_run(enabled=enabled, mode=mode, **kwargs)  # type: ignore[arg-type]
        assert isinstance(run, NullRun)
        run.log({"loss": 1.0}, 1)
        run.log_heatmap("lego_usage", np.zeros((2, 2, 3), np.uint8), 1)
        run.finish()
    assert not (tmp_path / "wandb_run_id").exists()
