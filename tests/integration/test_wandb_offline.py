"""logger=wandb, offline: the run file holds every task's loss series, the lego heatmap and the
config (read back with our own reader); a resumed run continues the same W&B run id."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gppf_dist.logging.wandb_file import RunFile, find_run_files

from .test_train_cli import TASKS, train_cmd


def run_wandb(run_dir: Path, shards: Path, max_steps: int) -> None:
    cmd = train_cmd(run_dir, shards, "launcher.nproc=2", f"trainer.max_steps={max_steps}")
    cmd += ["logger=wandb", "logger.mode=offline", "logger.heatmap_every=2"]
    cmd += ["trainer.checkpoint_every=2", "trainer.eval_at_start=false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def test_offline_run_holds_losses_heatmap_config_and_resumes(
    tmp_path: Path, tiny_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    run_wandb(run_dir, tiny_shards, max_steps=4)
    files = find_run_files(run_dir)
    assert len(files) == 1, files
    first = RunFile.read(files[0])
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert first.run_id == run_id and files[0].name == f"run-{run_id}.wandb"

    for task in TASKS:
        assert sorted(first.series(f"loss/{task}")) == [1, 2, 3, 4], task
    assert sorted(first.series("loss")) == [1, 2, 3, 4]
    heatmaps = first.series("lego_usage/_type")
    assert sorted(heatmaps) == [2, 4] and set(heatmaps.values()) == {"image-file"}
    for path in first.series("lego_usage/path").values():
        assert (files[0].parent / "files" / path).is_file()
    evals = [k for row in first.history for k in row if k.startswith("eval/cls_object/")]
    assert evals, "no eval/<task>/<metric> logged"
    assert first.config["trainer"]["max_steps"] == 4
    assert first.config["run"]["dir"] == str(run_dir)

    # Resume (same run.dir, more steps): a second offline file, same run id, steps 5..6 only.
    run_wandb(run_dir, tiny_shards, max_steps=6)
    files = find_run_files(run_dir)
    assert len(files) == 2, files
    second = RunFile.read(files[1])
    assert second.run_id == run_id
    for task in TASKS:
        assert sorted(second.series(f"loss/{task}")) == [5, 6], task
