"""Whom a rank is waiting for, decided from the heartbeats (`heartbeat.py`), and the one-line
reports that name them. Pure: the clock and the process table come in as arguments.

A rank that has waited in one phase past its allowance suspects each other rank that

* exited, or is stopped (SIGSTOP, a debugger): seen in /proc when it runs on the same host;
* stopped answering: no heartbeat for `silent_s` (its watchdog thread writes one every `beat_s`
  while the process runs, whatever the main thread does);
* is behind: its (steps done, phase) is before this rank's, so it never reached the collective
  this rank waits in;
* has no heartbeat of this attempt (it never started, or died before its first one).

Ranks level with or ahead of the waiting one and still beating are not suspects: a phase that is
merely slow on every rank (evaluation, a checkpoint save, the first step) is not a hang, and the
watchdog does nothing without a suspect.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gppf_dist.health.heartbeat import Beat

_SOURCE_PREFIX = re.compile(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*")
"""gloo's "[.../pair.cc:553] " in front of its messages."""
EXIT_STALLED = 3
"""The exit status of a worker its watchdog ended (`health/watchdog.py`)."""


@dataclass(frozen=True)
class Limits:
    """The watchdog's clock, all derived from `parallel.timeout_s` (the process group's timeout).

    A rank reports `lead_s` before the process group's own timeout so that its line comes first
    (NCCL aborts a process at the timeout without a Python exception). Start-up gets twice the
    timeout: the rendezvous, imports, DeepSpeed's set-up and the restore of a large checkpoint
    can each take long, and each is bounded by the group's timeout already."""

    timeout_s: float

    @property
    def lead_s(self) -> float:
        return min(10.0, max(1.0, self.timeout_s / 10))

    @property
    def beat_s(self) -> float:
        return min(5.0, max(0.5, self.timeout_s / 20))

    @property
    def silent_s(self) -> float:
        return max(4 * self.beat_s, min(self.timeout_s / 4, 60.0))

    def allowance(self, kind: str) -> float:
        if kind == "start-up":
            return 2 * self.timeout_s
        return max(self.timeout_s - self.lead_s, self.timeout_s / 2)


@dataclass(frozen=True)
class Suspect:
    rank: int
    reason: str
    beat: Beat | None


StateOf = Callable[[Beat], str | None]
"""A beat -> "exited", "stopped", "running", or None when it cannot be told."""


def find_suspects(
    me: Beat,
    beats: Mapping[int, Beat],
    world_size: int,
    now: float,
    silent_s: float,
    state_of: StateOf,
) -> list[Suspect]:
    """The other ranks `me` may be waiting for, in rank order."""
    out = []
    for rank in range(world_size):
        beat = beats.get(rank)
        if rank == me.rank or (beat is not None and beat.kind == "finished"):
            continue
        if beat is None or beat.attempt != me.attempt:
            out.append(Suspect(rank, "has no heartbeat from this attempt", None))
            continue
        state, age = state_of(beat), now - beat.at
        if state == "exited":
            reason = "exited"
        elif state == "stopped":
            reason = "is stopped (SIGSTOP or a debugger)"
        elif age >= silent_s:
            reason = f"stopped answering ({age:.0f} s without a heartbeat)"
        elif beat.progress < me.progress:
            reason = "is behind"
        else:
            continue
        out.append(Suspect(rank, reason, beat))
    return out


def describe(suspect: Suspect, now: float) -> str:
    beat = suspect.beat
    if beat is None:
        return f"rank {suspect.rank} {suspect.reason}"
    return (
        f"rank {suspect.rank} (pid {beat.pid} on {beat.host}) {suspect.reason}, last seen in "
        f"{beat.where()} (there for {now - beat.since:.0f} s; {beat.done} steps completed)"
    )


def stall_line(
    me: Beat, waited_s: float, suspects: list[Suspect], now: float, timeout_s: float
) -> str:
    """The watchdog's line when it ends a rank that waited too long."""
    named = "; ".join(describe(s, now) for s in suspects)
    return (
        f"watchdog: rank {me.rank} waited {waited_s:.0f} s in {me.where()} "
        f"(parallel.timeout_s={timeout_s:g}), waiting for: {named}"
    )


def failure_line(me: Beat, error: BaseException, suspects: list[Suspect], now: float) -> str:
    """The line printed before the traceback of a collective that failed (timed out, or a peer
    closed its connection)."""
    text = _SOURCE_PREFIX.sub("", str(error).strip()).splitlines()
    cause = f"{type(error).__name__}: {text[0][:160] if text else ''}"
    named = "; ".join(describe(s, now) for s in suspects)
    return (
        f"watchdog: rank {me.rank} failed in {me.where()} ({cause}); "
        f"{'suspects: ' + named if named else 'no other rank was stopped, gone or behind'}"
    )


def exit_line(rank: int, exitcode: int, signal_name: str, beat: Beat | None) -> str:
    """The launcher's line for a worker that ended with an error or a signal."""
    how = f"was killed by {signal_name}" if exitcode < 0 else f"exited with code {exitcode}"
    if exitcode == EXIT_STALLED:
        how += " (its watchdog: the line above names the rank it waited for)"
    if beat is None:
        return f"rank {rank} {how}; it left no heartbeat from this run"
    return (
        f"rank {rank} (pid {beat.pid}) {how}; its last heartbeat: {beat.where()} "
        f"({beat.done} steps completed)"
    )
