"""No silent hang, no silent death (DESIGN.md §5.9), with real workers: a SIGSTOPped rank is
named (rank, step, phase) within parallel.timeout_s plus a margin and the run ends; a SIGKILLed
rank's step is reported."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from gppf_dist.health.heartbeat import HEARTBEAT_DIR, read_beat
from gppf_dist.health.watchdog import MIN_GAP_S
from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import train_cmd

TIMEOUT_S = 20
ARGS = (
    "launcher.nproc=2",
    "trainer.max_steps=500",
    "trainer.checkpoint_every=1000",
    "trainer.eval_at_start=false",
    f"parallel.timeout_s={TIMEOUT_S}",
)


def start(run_dir: Path, shards: Path, log: Path) -> subprocess.Popen[bytes]:
    """`gppf-train` in its own session, its merged output in `log`."""
    with log.open("wb") as out:
        cmd = train_cmd(run_dir, shards, *ARGS)
        return subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)


def pid_after_steps(proc: subprocess.Popen[bytes], run_dir: Path, log: Path, rank: int) -> int:
    """The pid of `rank`, from its heartbeat, once rank 0 has logged 3 steps and the rank's own
    heartbeat is past start-up (the demo's first steps can all fit inside the one-second
    heartbeat timer: a rank signalled then is named, but "last seen in start-up")."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        beat = read_beat(run_dir / HEARTBEAT_DIR, rank)
        metrics = run_dir / "metrics.jsonl"
        trained = metrics.exists() and len(read_metrics(metrics)) >= 3
        if beat is not None and beat.kind != "start-up" and trained:
            return beat.pid
        time.sleep(0.1)
    raise AssertionError(f"the run did not reach step 3:\n{log.read_text()[-3000:]}")


def first_line(proc: subprocess.Popen[bytes], log: Path, pattern: str) -> tuple[float, str]:
    """(monotonic time it was seen, the line): the first line of `log` matching `pattern`,
    looked for every 0.1 s until the run ends (then killed, with its workers, after 90 s)."""
    deadline = time.monotonic() + TIMEOUT_S + 90
    while time.monotonic() < deadline:
        over = proc.poll() is not None
        found = [ln for ln in log.read_text().splitlines() if re.search(pattern, ln)]
        if found or over:
            assert found, f"no line matches {pattern!r}:\n{log.read_text()[-4000:]}"
            return time.monotonic(), found[0]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"no line matches {pattern!r} in time:\n{log.read_text()[-4000:]}")


def ended(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=TIMEOUT_S + 90)
    finally:
        if proc.poll() is None:  # it hangs: leave nothing behind
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def assert_last_step(line: str, run_dir: Path, before: str, signalled_at: float) -> None:
    """The step the line gives is at most the one after rank 0's last logged step (rank 0
    cannot get past the step its peer never finished), and it comes from a heartbeat written
    at most a second (the heartbeat timer) before the signal, plus scheduling slack: with
    steps shorter than a second it may lag the step the rank was in."""
    match = re.search(rf"{before} (step (\d+), |[\w ]+ after step (\d+))", line)
    assert match, line
    step = int(match[2] or match[3])
    logged = max(r["step"] for r in read_metrics(run_dir / "metrics.jsonl"))
    assert 1 <= step <= logged + 1, (logged, line)
    beat = read_beat(run_dir / HEARTBEAT_DIR, 1)
    assert beat is not None
    # the timer, then up to 2 s for a thread of a loaded 2-core machine to be scheduled
    assert signalled_at - beat.at <= MIN_GAP_S + 2.0, (signalled_at - beat.at, line)


def test_a_stopped_rank_is_named_and_the_run_ends(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "out.log"
    proc = start(run_dir, tiny_shards, log)
    pid = pid_after_steps(proc, run_dir, log, rank=1)
    signalled_at = time.time()
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    named_at, line = first_line(proc, log, r"watchdog: rank 0 waited")
    code = ended(proc)
    ended_s, named_s = time.monotonic() - stopped_at, named_at - stopped_at
    print(f"SIGSTOP -> naming line {named_s:.1f} s, -> run ended {ended_s:.1f} s\n{line}")
    assert code != 0
    assert named_s <= TIMEOUT_S + 5, line
    assert ended_s <= TIMEOUT_S + 60, log.read_text()[-3000:]
    assert re.search(rf"rank 1 \(pid {pid} on \S+\) is stopped", line), line
    assert_last_step(line, run_dir, "last seen in", signalled_at)
    assert re.search(r"last seen in (step \d+, (forward of \w+|gradient all-reduce|start of "
                     r"step)|(logging|checkpoint save) after step \d+)", line)  # fmt: skip


def test_a_killed_rank_reports_its_last_step(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "out.log"
    proc = start(run_dir, tiny_shards, log)
    pid = pid_after_steps(proc, run_dir, log, rank=1)
    signalled_at = time.time()
    os.kill(pid, signal.SIGKILL)
    assert ended(proc) != 0
    _, line = first_line(proc, log, rf"rank 1 \(pid {pid}\) was killed by SIGKILL")
    print("\n".join(ln for ln in log.read_text().splitlines() if "watchdog" in ln) + "\n" + line)
    assert_last_step(line, run_dir, "its last heartbeat:", signalled_at)
