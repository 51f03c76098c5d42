"""`gppf-train` refuses data it cannot train or evaluate on before any worker starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.test_train_cli import train_cmd
from tests.unit.test_validate_data import edited_root, no_det_val


def test_missing_val_split_is_refused_before_any_worker(tmp_path: Path, tiny_shards: Path) -> None:
    shards = edited_root(tiny_shards, tmp_path / "shards", no_det_val)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        train_cmd(run_dir, shards, "launcher.nproc=2", "trainer.max_steps=1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "configuration error: task 'det' has no split 'val'" in proc.stderr
    assert "workers:" not in proc.stdout  # rank 0 says this once its process group is up
    assert not (run_dir / "config.yaml").exists()  # written only once validation passed
    assert not (run_dir / "metrics.jsonl").exists()
