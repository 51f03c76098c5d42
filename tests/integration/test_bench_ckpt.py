"""`gppf-bench ckpt --json` on real DeepSpeed engines: a save hashes the bytes it writes as they
go out (nothing is read back), and a restart checksums its checkpoint once across the ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("zero", [0, 2])
def test_a_checkpoint_is_hashed_once_at_save_and_once_at_resume(zero: int) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gppf_dist.cli.bench", "ckpt", "--params", "3000000",
           "--world", "2", "--zero", str(zero), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    written = result["bytes_written"]
    assert written > 3_000_000 * 4 * 3  # fp32 weights and AdamW's two moments, at least
    assert result["files"] == (1 if zero == 0 else 3)  # ZeRO 2: a shard of the state per rank
    assert written <= result["bytes_hashed_at_save"] <= 1.05 * written
    resumed = result["bytes_resumed"]
    assert abs(resumed - written) < 0.01 * written  # the same state, two steps on
    assert resumed <= result["bytes_hashed_at_resume"] <= 1.05 * resumed
    assert 0 < result["async_blocking_s"] < result["sync_blocking_s"]
