"""How a process that ran a worker leaves: finished, or interrupted.

A worker that finished (checkpoint, metrics and W&B closed, process group destroyed) leaves
without interpreter finalization: native teardown at that point can abort the process
("terminate called without an active exception", SIGABRT, no Python frame left; seen in 3 of
87 two-worker CPU runs of the demo and once in a full test run), which would turn a finished run
into a failed one for its launcher. A worker that raises still exits the normal way, with its
traceback.

A worker interrupted by SIGINT (Ctrl-C, forwarded by the launcher's agent) unwinds what it
opened and leaves quietly with status 130: the launcher reports the step reached, the newest
complete checkpoint and the command that resumes. A second SIGINT leaves at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

INTERRUPTED = 130
"""Exit status after SIGINT (128 + 2), as shells report an interrupted command."""


def exit_finished() -> None:
    """Flush what is buffered, then end the process with status 0, without finalization."""
    _leave(0)


def exit_interrupted() -> None:
    """Status 130 after SIGINT, without finalization (and its atexit reports)."""
    _leave(INTERRUPTED)


def _leave(status: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


@contextmanager
def quiet_interrupt(on_interrupt: Callable[[], None] | None = None) -> Iterator[None]:
    """Run the body; after SIGINT, whatever it raised on the way out (KeyboardInterrupt, or a
    peer's closed connection), call `on_interrupt()` if given and exit with 130, no traceback."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if received:
            _leave(INTERRUPTED)  # the second one: at once
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    except BaseException:
        if not received:
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if on_interrupt is not None:
            on_interrupt()
        _leave(INTERRUPTED)
    finally:
        signal.signal(signal.SIGINT, previous)
