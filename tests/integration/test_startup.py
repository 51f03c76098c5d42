"""Start-up of a real `gppf-train experiment=demo`: the first line (what is checked and started)
arrives within 3 s, before the heavy imports; each start-up stage is said once, not once per
worker; no empty `train.log` is left in the run dir."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .test_train_cli import train_cmd


def test_first_line_within_3s_and_each_stage_once(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, tiny_shards, "launcher.nproc=2", "trainer.max_steps=1")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_s = time.monotonic() - started
    rest = proc.stdout.read()
    assert proc.wait(timeout=600) == 0, rest[-3000:]
    assert first.startswith("gppf-train: checking the configuration (experiment=demo"), first
    assert first_s < 3.0, f"first line after {first_s:.2f}s"
    lines = [first, *rest.splitlines()]
    assert sum("starting 2 workers" in line for line in lines) == 1
    assert sum("workers: 2 on" in line for line in lines) == 1
    assert not [line for line in lines if "built successfully" in line], rest  # no JIT op
    assert not (run_dir / "train.log").exists()
