"""Per-task evaluation on the validation split, spread over every rank.

Each rank evaluates part `rank` of `world_size` of every task's validation samples; metric
states are gathered to all ranks and merged, so every rank issues the same collectives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.data.loader import iter_eval_batches
from gppf_dist.data.manifest import Manifest
from gppf_dist.tasks.base import TaskSpec, TaskType, move_to


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    *,
    root: Path,
    manifest: Manifest,
    specs: dict[str, TaskSpec],
    task_types: dict[str, TaskType],
    batch_size: int,
    rank: int,
    world_size: int,
    device: torch.device,
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} for every task, identical on all ranks."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, float]] = {}
    try:
        for name in sorted(specs):
            task_type = task_types[name]
            metric = task_type.new_metric(specs[name])
            for batch in iter_eval_batches(
                root=root,
                manifest=manifest,
                task=name,
                spec=specs[name],
                task_type=task_type,
                split="val",
                batch_size=batch_size,
                num_parts=world_size,
                part=rank,
            ):
                outputs = model(name, batch.images.to(device))
                metric.update(move_to(outputs, torch.device("cpu")), batch.targets)
            states: list[Any] = [None] * world_size
            dist.all_gather_object(states, metric.state())
            values = metric.compute(states)
            primary = task_type.primary_metric
            results[name] = {primary: values[primary], **values}  # primary metric first
    finally:
        model.train(was_training)
    return results
