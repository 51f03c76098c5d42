"""What the multi-node tests share: the run's overrides, a free port, the losses of a run."""

from __future__ import annotations

import socket
from pathlib import Path

from gppf_dist.logging.metrics import read_metrics

ARGS = ("trainer.max_steps=3", "trainer.eval_at_start=false", "trainer.checkpoint_every=3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")]
