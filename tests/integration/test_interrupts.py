"""Signals to a real `gppf-train` (two workers under the elastic agent), sent to its process
group as a terminal or a scheduler would: Ctrl-C ends with a few lines naming the step reached,
the newest complete checkpoint and the command that resumes (exit 130); a second Ctrl-C ends the
workers at once; SIGTERM is a graceful preemption (exit 0, the `preempted:` line)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from gppf_dist.checkpoint.manager import find_latest

from .test_train_cli import train_cmd

ARGS = (
    "launcher.nproc=2",
    "trainer.max_steps=60",
    "trainer.checkpoint_every=2",
    "trainer.eval_at_start=false",
)
NOISE = ("Traceback", "KeyboardInterrupt", "Error executing job", "SignalException")


class Run:
    """`gppf-train` in its own session; its merged output collected line by line."""

    def __init__(self, run_dir: Path, shards: Path) -> None:
        self.run_dir = run_dir
        self.proc = subprocess.Popen(
            train_cmd(run_dir, shards, *ARGS),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_checkpoint(self, step: int) -> None:
        marker = self.run_dir / "checkpoints" / f"step_{step:08d}" / "COMPLETE"
        deadline = time.time() + 300
        while not marker.exists() and time.time() < deadline and self.proc.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "\n".join(self.lines[-30:])

    def workers(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def signal(self, sig: signal.Signals) -> None:
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, "\n".join(self.lines)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_says_where_to_resume_and_exits_130(tmp_path: Path, tiny_shards: Path) -> None:
    run = Run(tmp_path / "run", tiny_shards)
    run.wait_for_checkpoint(4)
    before = len(run.lines)
    run.signal(signal.SIGINT)
    code, out = run.finish(timeout=120)
    assert code == 130, out[-3000:]
    assert not any(n in out for n in NOISE), out[-3000:]
    after = run.lines[before:]
    assert len(after) <= 5, after
    newest = find_latest(tmp_path / "run" / "checkpoints")
    assert newest is not None
    assert f"newest complete checkpoint: step {int(newest[5:])} (" in out, after
    assert "stopped after step" in out
    resume = next(line for line in after if line.startswith("resume with: "))
    assert f"run.dir={tmp_path / 'run'}" in resume and "experiment=demo" in resume


def test_second_ctrl_c_ends_the_workers_at_once(tmp_path: Path, tiny_shards: Path) -> None:
    run = Run(tmp_path / "run", tiny_shards)
    run.wait_for_checkpoint(2)
    workers = run.workers()
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGSTOP)  # a worker that does not stop by itself
    run.signal(signal.SIGINT)
    time.sleep(2)
    assert run.proc.poll() is None, "the first Ctrl-C did not wait for the workers"
    started = time.monotonic()
    run.signal(signal.SIGINT)
    code, out = run.finish(timeout=60)
    assert time.monotonic() - started < 15
    assert code == 130, out[-3000:]
    assert not any(n in out for n in NOISE), out[-3000:]
    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers)


def test_sigterm_is_a_graceful_preemption_exit_0(tmp_path: Path, tiny_shards: Path) -> None:
    run = Run(tmp_path / "run", tiny_shards)
    run.wait_for_checkpoint(2)
    run.signal(signal.SIGTERM)
    code, out = run.finish(timeout=300)
    assert code == 0, out[-3000:]
    assert "preempted: stopped after step" in out
    assert not any(n in out for n in NOISE), out[-3000:]
