"""One metrics.jsonl line (and W&B log) for a finished step, from the step's all-reduced
statistics: the objective and per-task losses, throughput, costs, balance and locality."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class StepStats(Protocol):
    """The all-reduced statistics of one step (the engine's `StepResult`)."""

    task_loss_sums: torch.Tensor
    skipped: torch.Tensor
    task_seconds: torch.Tensor
    rank_busy_s: torch.Tensor
    regularizer: float
    grad_norm: float
    data_s: float
    lego_calls: tuple[float, float]


@dataclass(frozen=True)
class ModelFlops:
    """What MFU needs: each task's training FLOPs per sample (x1e-9) and the peak TFLOP/s of
    the whole world (one device's peak times the world size)."""

    train_gflop: dict[str, float]
    world_peak_tflops: float


def step_record(
    done: int,
    stats: StepStats,
    batch_sizes: dict[str, int],
    weights: dict[str, float],
    present: set[str],
    step_s: float,
    lr: float,
    flops: ModelFlops | None = None,
) -> dict[str, Any]:
    """`batch_sizes` and `weights`: per task, in task-index order (the order of the stats).
    With `flops`: `model_tflops`, the model FLOPs of the step's samples over its wall time,
    and `mfu`, that over the world's peak."""
    names = list(batch_sizes)
    batch = torch.tensor([batch_sizes[n] for n in names], dtype=torch.float64)
    weight = torch.tensor([weights[n] for n in names], dtype=torch.float64)
    mask = torch.tensor([n in present for n in names], dtype=torch.bool)
    means = stats.task_loss_sums / batch
    objective = float((means * weight)[mask].sum()) + stats.regularizer
    busy = stats.rank_busy_s
    record: dict[str, Any] = {
        "step": done,
        "loss": objective,
        **{f"loss/{n}": float(means[i]) for i, n in enumerate(names) if n in present},
        "loss/router_reg": stats.regularizer,
        "lr": lr,
        "grad_norm": stats.grad_norm,
        "samples_per_s": float(batch[mask].sum()) / step_s,
        **{
            f"samples_per_s/{n}": float(batch[i]) / step_s
            for i, n in enumerate(names)
            if n in present
        },
        **{  # of the previous step (see StepResult.task_seconds)
            f"cost_ms/{n}": 1e3 * float(stats.task_seconds[i]) / float(batch[i])
            for i, n in enumerate(names)
            if float(stats.task_seconds[i]) > 0
        },
        **{f"data/skipped/{n}": int(stats.skipped[i]) for i, n in enumerate(names)},
        **_dropped(stats, names),
        "time/step_s": step_s,
        "time/data_s": stats.data_s,
        "balance_efficiency": float(busy.mean() / busy.max()) if float(busy.max()) > 0 else 1.0,
        **{f"busy_s/rank{r}": float(b) for r, b in enumerate(busy)},
    }
    record["update_skipped"] = int(not math.isfinite(stats.grad_norm))
    if record["update_skipped"]:  # which tasks' losses were not finite (none: gradients only)
        record.update({f"nonfinite/{n}": int(not math.isfinite(float(means[i])))
                       for i, n in enumerate(names) if n in present})  # fmt: skip
    if flops is not None:
        gflop = sum(flops.train_gflop[n] * float(batch[i]) for i, n in enumerate(names)
                    if n in present)  # fmt: skip
        record["model_tflops"] = gflop / step_s / 1e3
        record["mfu"] = record["model_tflops"] / flops.world_peak_tflops
    local, remote = stats.lego_calls
    if local + remote > 0:  # expert parallelism: share of lego calls the requesting rank served
        record["ep/local_fraction"] = local / (local + remote)
    return record


def _dropped(stats: StepStats, names: list[str]) -> dict[str, int]:
    """`data/dropped/<task>`: targets (boxes, keypoints) the geometry dropped from kept samples
    so far (`SkipCounter.dropped`, summed over kinds), when the step's statistics carry them as
    a per-task `dropped` tensor; no sample was lost for these, unlike `data/skipped`."""
    dropped = getattr(stats, "dropped", None)
    if dropped is None:
        return {}
    return {f"data/dropped/{n}": int(dropped[i]) for i, n in enumerate(names)}
