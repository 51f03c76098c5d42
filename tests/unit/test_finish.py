"""How a finished worker process leaves (launch/finish.py): the normal interpreter exit, so
finalization runs (atexit handlers, buffered output); a non-daemon thread that never ends is
named and does not hold a finished run forever."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_a_finished_process_exits_through_finalization() -> None:
    proc = _run(
        """
        import atexit
        from gppf_dist.launch.finish import exit_finished
        atexit.register(lambda: print("finalized", flush=True))
        print("finished", end="")
        exit_finished()
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("finished") and "finalized" in proc.stdout, proc.stdout


def test_a_thread_that_never_ends_is_named_and_the_process_still_exits_0() -> None:
    proc = _run(
        """
        import threading
        from gppf_dist.launch import finish
        finish.THREAD_WAIT_S = 0.5
        threading.Thread(target=threading.Event().wait, name="stuck-uploader").start()
        finish.exit_finished()
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "leaving without the threads still running: stuck-uploader" in proc.stderr
