"""SIGTERM/SIGUSR1 mid-run: every rank agrees at a step boundary, checkpoints, exits cleanly;
running again resumes with no step lost or repeated."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gppf_dist.checkpoint.manager import find_latest
from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import run_train, train_cmd

ARGS = (
    "launcher.nproc=2",
    "trainer.max_steps=40",
    "trainer.checkpoint_every=1000",
    "trainer.eval_at_start=false",
)


def worker_pids(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("how", ["sigterm_all", "sigusr1_one_worker"])
def test_signal_checkpoints_and_resumes(tmp_path: Path, tiny_shards: Path, how: str) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        train_cmd(run_dir, tiny_shards, *ARGS),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(read_metrics(metrics)) >= 3:
            break
        time.sleep(0.2)
    if how == "sigterm_all":
        os.killpg(proc.pid, signal.SIGTERM)  # scancel / the elastic agent's shutdown
    else:
        # Slurm's B:USR1 path ends with USR1 reaching a worker; one rank is enough.
        agent_children = worker_pids(proc.pid)
        assert agent_children, "no worker processes found"
        os.kill(agent_children[0], signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert "preempted: stopped after step" in out, out[-3000:]
    stopped = max(r["step"] for r in read_metrics(metrics))
    assert stopped < 40
    assert find_latest(run_dir / "checkpoints") == f"step_{stopped:08d}"  # checkpoint of that step

    run_train(run_dir, tiny_shards, *ARGS)
    steps = [r["step"] for r in read_metrics(metrics)]
    assert steps == list(range(1, 41))
