"""The worker's watchdog: publishes where this rank is, and names the rank it waits for.

The training code marks its phases with `phase(kind, task)` (a few calls per step: the start of
a step, each forward, the gradient all-reduce, logging, checkpoint saves, each task's
evaluation). A mark only replaces a tuple and sets an event (about 2 µs): no file, no device
sync, no collective. A daemon thread does the rest. It writes this rank's heartbeat
(`health/heartbeat.py`) into the node-local folder on a timer: when the phase has changed, at most
once every `MIN_GAP_S` (one second, however fast the steps), and at least every `Limits.beat_s`.
The node's publisher (its lowest rank with a fresh beat) beats every second and each time
replaces the node's one file in the shared folder with all of the node's beats, so a shared file
system sees about one replace per node per second. A phase a rank is stuck in is therefore
published within about two seconds; a killed rank's last beat may be that old. When this rank
has been in one phase past its allowance (`health/stall.py`: `parallel.timeout_s` less a lead;
start-up twice the timeout) and is its node's scanner (the lowest of its node's ranks that are
themselves waiting past their allowance with a live watchdog), it reads every rank's heartbeat;
if some rank exited, is stopped, went silent or is behind, it prints one line naming it (rank,
step, phase) and ends this process with `EXIT_STALLED`, so the launcher tears the group down (or
restarts it under `launcher.max_restarts`). Without a suspect it does nothing but wait twice as
long before it reads them again (from `Limits.beat_s` up to `Limits.silent_s`): a phase slow on
every rank is no hang, and a long one is not a scan of every file every few seconds. The same
line is printed before the traceback when a collective raises (gloo's timeout, a peer's closed
connection), whichever comes first.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import TracebackType

from gppf_dist.config.schema import RunConfig
from gppf_dist.dist.env import rank_info_from_env
from gppf_dist.health.heartbeat import (
    FRESH_S,
    HEARTBEAT_DIR,
    Beat,
    attempt_token,
    local_beats,
    local_directory,
    process_state,
    publish_node,
    publisher,
    read_beats,
    retire_node,
    write_beat,
)
from gppf_dist.health.stall import (
    EXIT_STALLED,
    Limits,
    Suspect,
    failure_line,
    find_suspects,
    stall_line,
)

MIN_GAP_S = 1.0
"""A rank's heartbeat is written at most once a second, and so is its node's file (1,024 ranks
on 128 nodes: about 128 replaces a second in the shared heartbeat folder, whatever the step
time)."""
COLLECTIVE_ERROR = re.compile(
    r"gloo|nccl|timed out|timeout|connection (closed|reset|refused)|broken pipe|peer", re.I
)

_active: Watchdog | None = None


def phase(kind: str, task: str = "", done: int | None = None) -> None:
    """This rank enters a phase (`heartbeat.ORDER` lists the kinds); `done`: steps completed,
    when it changed. A no-op when no watchdog runs (tests, tools)."""
    if _active is not None:
        _active.enter(kind, task, done)


def watch(cfg: RunConfig) -> AbstractContextManager[object]:
    """This worker's watchdog (`parallel.watchdog`), for the worker's exit stack."""
    if not cfg.parallel.watchdog:
        return nullcontext()
    info = rank_info_from_env()
    return Watchdog(Path(cfg.run.dir), info.rank, info.world_size, cfg.parallel.timeout_s)


class Watchdog:
    """Entered once per worker, first thing; left last (also on errors)."""

    def __init__(self, run_dir: Path, rank: int, world_size: int, timeout_s: float) -> None:
        self.directory = run_dir / HEARTBEAT_DIR
        self.local = local_directory(self.directory)
        self.rank, self.world_size = rank, world_size
        self.limits = Limits(float(timeout_s))
        self.attempt = attempt_token(os.environ)
        self.host = socket.gethostname()
        # (steps done, kind, task, wall time, monotonic time) of the current phase.
        self._state = (0, "start-up", "", time.time(), time.monotonic())
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._next_scan = 0.0
        """Monotonic time before which a scan that named nobody is not repeated."""
        self._scan_gap = self.limits.beat_s
        self._publishing = False
        """Whether this rank published its node's file at its last beat."""
        self._thread = threading.Thread(target=self._run, name="gppf-watchdog", daemon=True)

    def enter(self, kind: str, task: str = "", done: int | None = None) -> None:
        steps = self._state[0] if done is None else done
        self._state = (steps, kind, task, time.time(), time.monotonic())
        self._scan_gap, self._next_scan = self.limits.beat_s, 0.0  # a new phase: no back-off
        self._changed.set()

    def beat(self) -> Beat:
        done, kind, task, since, _ = self._state
        return Beat(self.rank, os.getpid(), self.host, self.attempt, done, kind, task, since,
                    time.time())  # fmt: skip

    def __enter__(self) -> Watchdog:
        global _active
        self.directory.mkdir(parents=True, exist_ok=True)
        self.local.mkdir(parents=True, exist_ok=True)
        self._publish(always=True)
        self._thread.start()
        _active = self
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _active
        _active = None
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout=5)
        if error is not None and _is_collective_error(error):
            me = self.beat()
            line = failure_line(me, error, self.suspects(me), time.time())
            print(line, file=sys.stderr, flush=True)
        if error is None:
            self.enter("finished")
        with contextlib.suppress(OSError):
            self._publish(always=True)
        if error is None:
            retire_node(self.local, self.attempt)  # after a failure the launcher reads it

    def _publish(self, always: bool = False) -> None:
        """This rank's beat into the node's folder; the node's file too when this rank is its
        publisher (or `always`: the first and the last beat)."""
        me = self.beat()
        write_beat(self.local, me)
        self._publishing = publisher(local_beats(self.local, self.attempt), me.at) == self.rank
        if always or self._publishing:
            publish_node(self.local, self.directory, self.host, self.attempt)

    def _is_scanner(self) -> bool:
        """The lowest of this node's ranks with a live watchdog that wait past their
        allowance: one scan per node, and a stopped rank never holds it."""
        now = time.time()
        waiting = [
            b.rank
            for b in local_beats(self.local, self.attempt)
            if now - b.at <= FRESH_S and now - b.since > self.limits.allowance(b.kind)
        ]
        return min(waiting, default=self.rank) >= self.rank

    def suspects(self, me: Beat) -> list[Suspect]:
        beats = read_beats(self.directory, self.world_size)
        silent_s = self.limits.silent_s
        return find_suspects(me, beats, self.world_size, time.time(), silent_s, _state_of)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._publishing:  # the publisher beats every second: the node's changes
                self._changed.wait(self.limits.beat_s)
            self._changed.clear()
            if self._stop.is_set():
                return
            with contextlib.suppress(OSError):  # a full or flaky disk must not end the run
                self._publish()
            _, kind, _, _, started = self._state
            now = time.monotonic()
            if (
                now - started > self.limits.allowance(kind)
                and now >= self._next_scan
                and self._is_scanner()
            ):
                self._check(now - started)
            # the timer: at most one beat a second (under a very short `timeout_s`, a beat_s)
            self._stop.wait(min(MIN_GAP_S, self.limits.beat_s))

    def _check(self, waited_s: float) -> None:
        me = self.beat()
        suspects = self.suspects(me)
        if suspects:
            line = stall_line(me, waited_s, suspects, time.time(), self.limits.timeout_s)
            print(line, file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(EXIT_STALLED)
        # nobody to name (every rank slow alike): look again later, each time later still
        self._next_scan = time.monotonic() + self._scan_gap
        self._scan_gap = min(2 * self._scan_gap, self.limits.silent_s)


def _state_of(beat: Beat) -> str | None:
    return process_state(beat.pid, beat.host)


def _is_collective_error(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and bool(COLLECTIVE_ERROR.search(str(error)))
