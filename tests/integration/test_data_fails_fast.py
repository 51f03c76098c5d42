"""`gppf-train` refuses data it cannot train or evaluate on before any worker starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from gppf_dist.data.decode.gpu import installed_backends
from tests.integration.test_train_cli import train_cmd
from tests.unit.test_validate_data import edited_root, no_det_val


def refused(run_dir: Path, shards: Path, env: dict[str, str] | None = None) -> str:
    """`gppf-train`'s stderr, after checking it stopped at validation: no worker, no run files."""
    proc = subprocess.run(
        train_cmd(run_dir, shards, "launcher.nproc=2", "trainer.max_steps=1"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "workers:" not in proc.stdout  # rank 0 says this once its process group is up
    assert not (run_dir / "config.yaml").exists()  # written only once validation passed
    assert not (run_dir / "metrics.jsonl").exists()
    return proc.stderr


def test_missing_val_split_is_refused_before_any_worker(tmp_path: Path, tiny_shards: Path) -> None:
    shards = edited_root(tiny_shards, tmp_path / "shards", no_det_val)
    stderr = refused(tmp_path / "run", shards)
    assert "configuration error: task 'det' has no split 'val'" in stderr


@pytest.mark.skipif(
    torch.cuda.is_available() and bool(installed_backends()), reason="a GPU decoder works here"
)
def test_a_gpu_decoder_that_cannot_work_is_refused_before_any_worker(
    tmp_path: Path, tiny_shards: Path
) -> None:
    stderr = refused(tmp_path / "run", tiny_shards, {"GPPF_DECODER": "gpu"})
    assert "configuration error: `GPPF_DECODER`='gpu' cannot be used here" in stderr
