"""The speed a user gets: `gppf-train` run directly (no OMP_NUM_THREADS, as README shows) steps
about as fast as under `make` (which exports OMP_NUM_THREADS=1), because each worker sizes its
intra-op threads from the cores the local workers share (`dist/threads.py`)."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import train_cmd

STEPS = 10


def median_step_s(run_dir: Path, shards: Path, env: dict[str, str]) -> tuple[float, str]:
    cmd = train_cmd(
        run_dir, shards, "launcher.nproc=2", f"trainer.max_steps={STEPS}",
        "trainer.eval_at_start=false", f"trainer.checkpoint_every={STEPS}",
    )  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    times = [r["time/step_s"] for r in read_metrics(run_dir / "metrics.jsonl")]
    return statistics.median(times[2:]), proc.stdout  # the first steps warm up


def test_direct_run_is_not_much_slower_than_under_make(tmp_path: Path, tiny_shards: Path) -> None:
    direct = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    made = {**direct, "OMP_NUM_THREADS": "1"}
    slow, out = median_step_s(tmp_path / "direct", tiny_shards, direct)
    fast, _ = median_step_s(tmp_path / "make", tiny_shards, made)
    cores = len(os.sched_getaffinity(0))
    assert f"intra-op CPU threads ({cores} cores / 2 local workers)" in out
    # Measured here: with torch's default (2 threads per worker on 2 cores) a step took ~20x longer.
    assert slow <= 3.0 * fast, (slow, fast)
