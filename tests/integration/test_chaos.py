"""Chaos with exact losses: one 2-worker run survives, in turn, a SIGKILLed worker (elastic
restart from the newest checkpoint), a SIGTERM preemption of the whole group (checkpoint, exit,
rerun) and a corrupted newest checkpoint (the rerun falls back to the one before), and ends with
every step logged once and per-step losses bit-identical to an undisturbed run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from gppf_dist.checkpoint.manager import find_latest
from gppf_dist.logging.metrics import read_metrics

from .test_cluster_elastic import worker_pids
from .test_train_cli import run_train, train_cmd

STEPS = 16
ARGS = (
    "launcher.nproc=2",
    f"trainer.max_steps={STEPS}",
    "trainer.checkpoint_every=4",
    "trainer.eval_at_start=false",
)


def _wait(proc: subprocess.Popen, ready: object, what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"never reached: {what} (exit {proc.poll()})")


def _steps(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return max((r["step"] for r in read_metrics(metrics)), default=0) if metrics.exists() else 0


def _complete(run_dir: Path, step: int) -> bool:
    return (run_dir / "checkpoints" / f"step_{step:08d}" / "COMPLETE").exists()


def _corrupt_newest(run_dir: Path) -> str:
    """Flip a byte of the largest file the newest checkpoint's marker lists; returns its tag."""
    tag = find_latest(run_dir / "checkpoints")
    assert tag is not None
    tag_dir = run_dir / "checkpoints" / tag
    files = json.loads((tag_dir / "COMPLETE").read_text())["files"]
    name = max(files, key=lambda n: files[n]["size"])
    data = bytearray((tag_dir / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tag_dir / name).write_bytes(bytes(data))
    return tag


def test_kill_preempt_corrupt_and_still_the_undisturbed_losses(
    tmp_path: Path, tiny_shards: Path
) -> None:
    calm = tmp_path / "calm"
    run_train(calm, tiny_shards, *ARGS)
    expected = [(r["step"], r["loss"]) for r in read_metrics(calm / "metrics.jsonl")]
    assert [s for s, _ in expected] == list(range(1, STEPS + 1))

    run_dir = tmp_path / "chaos"
    proc = subprocess.Popen(
        train_cmd(run_dir, tiny_shards, *ARGS, "launcher.max_restarts=1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait(proc, lambda: _complete(run_dir, 4) and _steps(run_dir) >= 6, "step 6")
        os.kill(worker_pids(proc.pid)[-1], signal.SIGKILL)  # 1: a worker dies; restart at 4
        _wait(proc, lambda: _complete(run_dir, 8) and _steps(run_dir) >= 10, "step 10 again")
        os.killpg(proc.pid, signal.SIGTERM)  # 2: the whole group is preempted
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "resuming from checkpoint at step 4" in out, out[-3000:]
    assert "preempted: stopped after step" in out, out[-3000:]
    assert _steps(run_dir) < STEPS

    damaged = _corrupt_newest(run_dir)  # 3: the preemption's checkpoint is damaged on disk
    rerun = run_train(run_dir, tiny_shards, *ARGS)
    assert f"checkpoint {damaged} is damaged" in rerun.stdout + rerun.stderr
    got = [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl")]
    assert got == expected  # every step once, every loss bit-identical
