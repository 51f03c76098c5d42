"""Signals while the local agent runs: Ctrl-C said once, a second one ends the workers at once.

The first SIGINT prints one line and stops the workers through the agent (it forwards SIGINT and
waits for them to unwind). A second SIGINT kills the workers' process groups (each worker is a
session leader, with its decode processes inside) and the agent returns without waiting. The
agent's own notices about the signal it forwards are dropped: the caller reports instead.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import psutil
from torch.distributed.elastic.multiprocessing.api import SignalException

from gppf_dist.launch.command import command_name

_AGENT_LOGGERS = (
    "torch.distributed.elastic.agent.server.api",
    "torch.distributed.elastic.multiprocessing.api",
)
_AGENT_NOTICES = ("death signal", "closing signal", "Got termination signal")


class RunInterruptedError(RuntimeError):
    """The workers were stopped by a signal to the launcher."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(f"stopped by {sig.name}")
        self.signal = sig


@dataclass
class Stopped:
    signal: signal.Signals | None = None


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in str(record.msg) for n in _AGENT_NOTICES)


def kill_workers() -> None:
    """SIGKILL the process group of every child of this process that leads its own session."""
    for child in psutil.Process().children():
        try:
            if os.getsid(child.pid) == child.pid:
                os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


@contextmanager
def agent_signals() -> Iterator[Stopped]:
    stopped = Stopped()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stopped.signal is None:
            stopped.signal = signal.SIGINT
            print(
                f"{command_name()}: interrupted; stopping the workers "
                "(Ctrl-C again stops them at once)",
                file=sys.stderr,
                flush=True,
            )
        else:
            kill_workers()
        raise SignalException("interrupted", sigval=signal.SIGINT)

    drop = _DropNotices()
    for name in _AGENT_LOGGERS:
        logging.getLogger(name).addFilter(drop)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)
        for name in _AGENT_LOGGERS:
            logging.getLogger(name).removeFilter(drop)
