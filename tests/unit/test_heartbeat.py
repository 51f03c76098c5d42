"""Heartbeats and the watchdog's decisions, without a process group: the file format, whom a
waiting rank suspects, the lines that name them, and the watchdog thread ending a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gppf_dist.health.heartbeat import (
    Beat,
    attempt_token,
    beat_path,
    decode,
    encode,
    process_state,
    read_beats,
    write_beat,
)
from gppf_dist.health.stall import (
    EXIT_STALLED,
    Limits,
    exit_line,
    failure_line,
    find_suspects,
    stall_line,
)
from gppf_dist.health.watchdog import Watchdog

NOW = 1_000_000.0
HOST = socket.gethostname()


def beat(rank: int, done: int = 6, kind: str = "forward", task: str = "det", **kw: object) -> Beat:
    fields: dict[str, object] = dict(
        rank=rank, pid=100 + rank, host="node-a", attempt="gppf-1/0", done=done, kind=kind,
        task=task, since=NOW - 30, at=NOW - 1,
    )  # fmt: skip
    fields.update(kw)
    return Beat(**fields)  # type: ignore[arg-type]


def running(b: Beat) -> str | None:
    return "running"


def test_a_beat_survives_encoding_and_garbage_is_refused() -> None:
    b = beat(3)
    assert decode(encode(b)) == b
    assert decode(encode(b)[:-5]) is None  # torn
    assert decode('{"rank": 1}') is None
    assert decode(encode(replace(b, kind="dancing"))) is None
    assert decode(encode(replace(b, host=7))) is None  # type: ignore[arg-type]
    assert decode("[1, 2]") is None


def test_where_says_step_and_phase_as_a_user_counts_them() -> None:
    assert beat(1, done=6).where() == "step 7, forward of det"
    assert beat(1, done=6, kind="gradient all-reduce", task="").where() == (
        "step 7, gradient all-reduce"
    )
    assert beat(1, done=6, kind="checkpoint save", task="").where() == (
        "checkpoint save after step 6"
    )
    assert beat(1, done=0, kind="evaluation", task="seg").where() == "evaluation of seg, step 0"
    assert beat(1, done=0, kind="start-up", task="").where() == "start-up"
    assert beat(1, done=7, kind="logging", task="").where() == "logging after step 7"


def test_progress_orders_the_phases_of_a_run() -> None:
    run = [
        (0, "start-up"), (0, "evaluation"), (0, "start of step"), (0, "forward"),
        (0, "gradient all-reduce"), (1, "logging"), (1, "checkpoint save"), (1, "start of step"),
        (1, "forward"), (1, "gradient all-reduce"), (2, "logging"), (2, "checkpoint save"),
        (2, "evaluation"), (2, "finished"),
    ]  # fmt: skip
    keys = [beat(0, done=d, kind=k).progress for d, k in run]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_files_are_replaced_whole_and_read_per_rank(tmp_path: Path) -> None:
    write_beat(tmp_path, beat(0))
    write_beat(tmp_path, beat(1, done=2))
    write_beat(tmp_path, beat(1, done=3))
    beat_path(tmp_path, 2).write_text("{not json")
    beats = read_beats(tmp_path, world_size=4)
    assert sorted(beats) == [0, 1] and beats[1].done == 3
    assert not list(tmp_path.glob(".*tmp"))


def test_attempt_tokens_are_shared_by_an_attempt_and_differ_between_attempts() -> None:
    elastic = {"TORCHELASTIC_RUN_ID": "gppf-ab", "TORCHELASTIC_RESTART_COUNT": "1"}
    assert attempt_token(elastic) == "gppf-ab/1"
    assert attempt_token({**elastic, "TORCHELASTIC_RESTART_COUNT": "2"}) != "gppf-ab/1"
    slurm = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0"}
    assert attempt_token(slurm) == "slurm-42.0/0"
    assert attempt_token({"MASTER_ADDR": "h", "MASTER_PORT": "29500"}) == "h:29500/0"


def test_process_state_tells_running_stopped_and_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_state(child.pid, HOST) == "running"
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.time() + 10
        while process_state(child.pid, HOST) != "stopped" and time.time() < deadline:
            time.sleep(0.05)
        assert process_state(child.pid, HOST) == "stopped"
        assert process_state(child.pid, "another-host") is None
    finally:
        child.kill()
    child.wait()
    assert process_state(child.pid, HOST) == "exited"


def test_a_waiting_rank_suspects_stopped_gone_silent_behind_and_missing_ranks() -> None:
    me = beat(0, kind="gradient all-reduce", task="")
    beats = {
        0: me,
        1: beat(1),  # behind: still in a forward of the step rank 0 reduces
        2: beat(2, at=NOW - 20),  # silent
        3: beat(3, pid=7),  # stopped
        4: beat(4, pid=8),  # gone
        5: beat(5, kind="gradient all-reduce", task=""),  # level, beating: waits like rank 0
        6: beat(6, done=7, kind="forward"),  # ahead
        7: beat(7, attempt="gppf-1/1"),  # another attempt's file
        8: beat(8, done=7, kind="finished", task=""),
    }
    states = {7: "stopped", 8: "exited"}
    suspects = find_suspects(
        me, beats, world_size=10, now=NOW, silent_s=5, state_of=lambda b: states.get(b.pid)
    )
    reasons = {s.rank: s.reason for s in suspects}
    assert sorted(reasons) == [1, 2, 3, 4, 7, 9]
    assert reasons[1] == "is behind"
    assert reasons[2].startswith("stopped answering (20 s")
    assert reasons[3].startswith("is stopped")
    assert reasons[4] == "exited"
    assert "no heartbeat" in reasons[7] and "no heartbeat" in reasons[9]


def test_nobody_is_suspected_when_every_rank_is_level_and_beating() -> None:
    """A phase slow on every rank (an evaluation, a save) is not a hang."""
    me = beat(0, done=40, kind="evaluation", task="det")
    beats = {r: beat(r, done=40, kind="evaluation", task="det") for r in range(4)}
    assert find_suspects(me, beats, 4, NOW, 5, running) == []


def test_allowances_leave_start_up_room_and_come_before_the_group_timeout() -> None:
    limits = Limits(20)
    assert limits.allowance("start-up") == 40
    assert limits.allowance("forward") == 18 < 20
    assert Limits(600).allowance("gradient all-reduce") == 590
    assert limits.beat_s * 4 <= limits.silent_s < limits.allowance("forward")


def test_lines_name_rank_step_and_phase() -> None:
    me = beat(0, kind="gradient all-reduce", task="")
    suspects = find_suspects(me, {0: me, 1: beat(1, at=NOW - 19)}, 2, NOW, 5, running)
    line = stall_line(me, 18.4, suspects, NOW, 20)
    assert line.startswith("watchdog: rank 0 waited 18 s in step 7, gradient all-reduce")
    assert "rank 1 (pid 101 on node-a) stopped answering (19 s" in line
    assert "step 7, forward of det" in line and "6 steps completed" in line
    err = RuntimeError("[gloo] Timed out waiting 20000ms for recv operation\nmore")
    assert "(RuntimeError: [gloo] Timed out waiting 20000ms for recv operation)" in failure_line(
        me, err, suspects, NOW
    )
    assert "no other rank" in failure_line(me, err, [], NOW)
    closed = RuntimeError("[/src/gloo/transport/tcp/pair.cc:553] Connection closed by peer")
    assert "(RuntimeError: Connection closed by peer)" in failure_line(me, closed, [], NOW)
    killed = exit_line(1, -9, "SIGKILL", beat(1))
    assert killed == (
        "rank 1 (pid 101) was killed by SIGKILL; its last heartbeat: step 7, forward of det "
        "(6 steps completed)"
    )
    assert "its watchdog" in exit_line(0, EXIT_STALLED, "", me)
    assert "no heartbeat" in exit_line(2, 1, "", None)


def test_the_watchdog_writes_on_phase_changes(tmp_path: Path) -> None:
    dog = Watchdog(tmp_path, rank=0, world_size=1, timeout_s=20)
    with dog:
        dog.enter("forward", "det", done=4)
        deadline = time.time() + 5
        while time.time() < deadline:
            got = read_beats(tmp_path / "heartbeat", 1).get(0)
            if got is not None and got.kind == "forward":
                break
            time.sleep(0.02)
        assert got is not None and (got.done, got.kind, got.task) == (4, "forward", "det")
        assert got.pid == os.getpid()
    assert read_beats(tmp_path / "heartbeat", 1)[0].kind == "finished"


WAITING_RANK = """
import sys, time
from pathlib import Path
from gppf_dist.health.watchdog import Watchdog
dog = Watchdog(Path(sys.argv[1]), rank=0, world_size=2, timeout_s=int(sys.argv[2]))
with dog:
    dog.enter("gradient all-reduce", done=6)
    time.sleep(30)
"""


@pytest.mark.parametrize("peer_alive", [False, True])
def test_the_watchdog_ends_a_rank_waiting_for_a_silent_peer_only(
    tmp_path: Path, peer_alive: bool
) -> None:
    """A peer that went silent is named and the waiting process ends; a peer still beating at
    the same point is waited for (the process group's own timeout decides then)."""
    (tmp_path / "heartbeat").mkdir()
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "t", "TORCHELASTIC_RESTART_COUNT": "0"}
    peer = beat(1, done=6, kind="gradient all-reduce" if peer_alive else "forward",
                attempt="t/0", host="elsewhere", at=time.time() - 60)  # fmt: skip
    write_beat(tmp_path / "heartbeat", peer)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", WAITING_RANK, str(tmp_path), "3"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if peer_alive:  # keep the peer beating, level with rank 0, past rank 0's allowance (2 s)
        waited = 0.0
        while waited < 3.5 and time.monotonic() - t0 < 60 and proc.poll() is None:
            write_beat(tmp_path / "heartbeat", replace(peer, at=time.time()))
            me = read_beats(tmp_path / "heartbeat", 1).get(0)
            waited = time.time() - me.since if me and me.kind == "gradient all-reduce" else 0.0
            time.sleep(0.2)
        assert waited >= 3.5 and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.kill()
        proc.wait()
        return
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_STALLED, err
    assert time.monotonic() - t0 < 15
    assert "watchdog: rank 0 waited" in err and "step 7, gradient all-reduce" in err
    assert "rank 1 (pid 101 on elsewhere) stopped answering" in err
    assert "step 7, forward of det" in err


def test_a_flood_of_phase_changes_is_written_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However fast the phases change (here every millisecond, as tiny steps on a GPU would),
    a rank replaces its heartbeat at most once a second, and its latest phase is on disk
    within a second of the changes stopping."""
    from gppf_dist.health import watchdog

    writes: list[float] = []
    real = watchdog.write_beat

    def counting(directory: Path, beat: object) -> None:
        writes.append(time.monotonic())
        real(directory, beat)  # type: ignore[arg-type]

    monkeypatch.setattr(watchdog, "write_beat", counting)
    dog = Watchdog(tmp_path, rank=0, world_size=1, timeout_s=600)
    with dog:
        start = time.monotonic()
        step = 0
        while time.monotonic() - start < 3.0:
            step += 1
            dog.enter("start of step", done=step)
            dog.enter("forward", "det")
            time.sleep(0.001)
        time.sleep(1.3)
        last = read_beats(tmp_path / "heartbeat", 1)[0]
        assert (last.done, last.kind) == (step, "forward")
    during = [t for t in writes if t <= start + 3.0]
    assert step > 300 and len(during) <= 5, (step, len(during))  # the first beat, then <= 1/s
    gaps = [b - a for a, b in zip(writes[1:-1], writes[2:-1], strict=False)]
    assert all(gap >= 0.95 for gap in gaps), gaps


def test_a_scan_naming_nobody_is_repeated_later_and_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dog = Watchdog(tmp_path, rank=0, world_size=2, timeout_s=600)
    monkeypatch.setattr(dog, "suspects", lambda me: [])
    gaps = []
    for _ in range(6):
        before = time.monotonic()
        dog._check(700.0)
        gaps.append(round(dog._next_scan - before))
    limits = dog.limits
    assert gaps[0] == round(limits.beat_s) and gaps[-1] == round(limits.silent_s)
    assert gaps == sorted(gaps) and len(set(gaps)) > 2, gaps
