"""Which metric keys a run logs, learned from the code that logs them, not listed by hand.

A dashboard panel for a key no run logs stays empty forever, and nothing says so: so the step
keys come from `step_record` itself, fed a stand-in step of the given tasks (a renamed key in
the record renames it here), and a run directory's own `metrics.jsonl` says what that run has
logged so far. Two kinds of key never reach `metrics.jsonl` and go to W&B only (from rank 0,
`engine/worker.py`): the final evaluation (`eval/<task>/<metric>`) and the lego-usage heatmap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from gppf_dist.logging.record import ModelFlops, step_record

STEP_METRIC = "global_step"
"""W&B's step metric (`wandb_run.WandbRun.log` adds it to every log): every line plot's x axis."""
HEATMAP_KEY = "lego_usage"
"""The image `worker.log_step` logs every `logger.heatmap_every` steps (`Run.log_heatmap`)."""


def eval_key(task: str, metric: str) -> str:
    """The W&B key of one final-evaluation value (`worker.finish`)."""
    return f"eval/{task}/{metric}"


@dataclass(frozen=True)
class RunKeys:
    """The keys a run of some tasks logs, by when it logs them."""

    step: tuple[str, ...]
    """In every metrics.jsonl line (and W&B log) from the second step on."""
    occasional: tuple[str, ...]
    """In metrics.jsonl only on some steps or runs: `nonfinite/<task>` when an update was
    skipped; `model_tflops` and `mfu` where the device's peak is known (`dist/peak.py`)."""
    wandb_only: tuple[str, ...]
    """Never in metrics.jsonl: the final evaluation and the heatmap."""

    def all(self) -> list[str]:
        return [*self.step, *self.occasional, *self.wandb_only]

    def restrict(self, logged: Iterable[str]) -> tuple[list[str], list[str]]:
        """(the keys a run that logged `logged` to metrics.jsonl shows, the step keys it has
        not logged). The file's keys stand (an expert-parallel run's `ep/local_fraction`, one
        `busy_s/rank<r>` per rank); occasional and W&B-only keys are kept: no file shows them
        before the event, yet a run logs them exactly when they matter."""
        have = list(dict.fromkeys(logged))
        missing = [k for k in self.step if k not in set(have)]
        extra = [k for k in (*self.occasional, *self.wandb_only) if k not in set(have)]
        return have + extra, missing


@dataclass(frozen=True)
class _StandInStep:
    """A step's all-reduced statistics (`record.StepStats`, with `dropped` as the engine's
    `StepResult` has it) in which every task ran and took time on one rank."""

    task_loss_sums: torch.Tensor
    skipped: torch.Tensor
    dropped: torch.Tensor
    task_seconds: torch.Tensor
    rank_busy_s: torch.Tensor
    regularizer: float
    grad_norm: float
    data_s: float
    lego_calls: tuple[float, float]


def _record_keys(tasks: list[str], grad_norm: float, flops: bool = False) -> list[str]:
    n = len(tasks)
    stats = _StandInStep(
        task_loss_sums=torch.ones(n, dtype=torch.float64),
        skipped=torch.zeros(n),
        dropped=torch.zeros(n),
        task_seconds=torch.ones(n, dtype=torch.float64),
        rank_busy_s=torch.ones(1, dtype=torch.float64),
        regularizer=0.0,
        grad_norm=grad_norm,
        data_s=0.0,
        lego_calls=(0.0, 0.0),  # no expert parallelism: `ep/local_fraction` only where it runs
    )
    ones = dict.fromkeys(tasks, 1)
    weights = dict.fromkeys(tasks, 1.0)
    model_flops = ModelFlops(dict.fromkeys(tasks, 1.0), 1.0) if flops else None
    return list(step_record(2, stats, ones, weights, set(tasks), 1.0, 0.0, model_flops))


def run_keys(eval_metrics: dict[str, list[str]]) -> RunKeys:
    """The keys a run of these tasks logs; `eval_metrics`: {task: the metric names its task
    type's evaluation reports} (task types live above this layer: the caller asks them)."""
    tasks = list(eval_metrics)
    if not tasks:
        raise ValueError("`tasks`=[] must name at least one task")
    step = _record_keys(tasks, grad_norm=1.0)
    skipped_update = _record_keys(tasks, grad_norm=math.nan)
    with_peak = _record_keys(tasks, grad_norm=1.0, flops=True)
    occasional = [k for k in [*skipped_update, *with_peak] if k not in set(step)]
    wandb_only = [eval_key(t, m) for t, names in eval_metrics.items() for m in names]
    return RunKeys(tuple(step), tuple(occasional), (*wandb_only, HEATMAP_KEY))


def logged_keys(metrics_path: Path) -> list[str]:
    """Every key any line of a run's metrics.jsonl holds, in first-seen order. A live run may
    be halfway through writing the last line: a line that is not JSON is passed over."""
    seen: dict[str, None] = {}
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            seen.update(dict.fromkeys(record))
    return list(seen)
