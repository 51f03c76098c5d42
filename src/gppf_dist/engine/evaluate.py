"""Per-task evaluation on the validation split, spread over every rank.

Each rank evaluates part `rank` of `world_size` of every task's validation samples. Metric
states are gathered to rank 0, which merges them (COCO mAP, retrieval over every embedding: the
work is done once, not on every rank, and no rank but 0 holds every state); the results reach
every rank in one broadcast at the end, a metric's failure too, so every rank issues the same
collectives and raises together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.data.format.manifest import Manifest
from gppf_dist.data.load.loader import iter_eval_batches
from gppf_dist.health.watchdog import phase
from gppf_dist.parallel.expert import EPSession, PeerWork
from gppf_dist.tasks.base import Batch, TaskSpec, TaskType, move_to


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
    ep: EPSession | None = None,
    decoder: str = "",
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} for every task, identical on all ranks.

    Under expert parallelism the ranks of an EP group step through each task's batches in
    lockstep (a rank out of batches serves its peers' lego calls until all are done)."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, float]] = {}
    failure: str | None = None
    try:
        for name in sorted(specs):
            phase("evaluation", name)
            task_type = task_types[name]
            metric = task_type.new_metric(specs[name])
            batches = iter(
                iter_eval_batches(
                    root=root,
                    manifest=manifest,
                    task=name,
                    spec=specs[name],
                    task_type=task_type,
                    split="val",
                    batch_size=batch_size,
                    num_parts=world_size,
                    part=rank,
                    decoder=decoder,
                )
            )
            while True:
                batch = next(batches, None)
                if ep is not None and not _ep_lockstep(ep, name, batch, device):
                    break
                if batch is None:
                    if ep is None:
                        break
                    continue
                outputs = model(name, batch.images.to(device))
                if ep is not None:
                    ep.finish(torch.zeros((), device=device))
                metric.update(move_to(outputs, torch.device("cpu")), batch.targets)
            states: list[Any] | None = [None] * world_size if rank == 0 else None
            dist.gather_object(metric.state(), states, dst=0)
            if states is not None and failure is None:
                try:
                    values = metric.compute(states)
                except Exception as err:  # every rank raises it, after the broadcast
                    failure = f"evaluation of {name!r} failed on rank 0: {err!r}"
                    continue
                primary = task_type.primary_metric
                results[name] = {primary: values[primary], **values}  # primary metric first
        shared: list[Any] = [results, failure]
        dist.broadcast_object_list(shared, src=0)
        results, failure = shared
    finally:
        model.train(was_training)
    if failure is not None:
        raise RuntimeError(failure)
    return results


def _ep_lockstep(ep: EPSession, task: str, batch: Batch | None, device: torch.device) -> bool:
    """Agree on this micro-step's batch sizes in the EP group; False once all are done. A rank
    without a batch runs the dummy exchanges for its peers."""
    size = torch.tensor([0 if batch is None else batch.images.shape[0]], device=device)
    sizes = [torch.zeros_like(size) for _ in range(ep.layout.ep_size)]
    dist.all_gather(sizes, size, group=ep.group)
    counts = [int(s) for s in sizes]
    if max(counts) == 0:
        return False
    ep.begin([PeerWork(task if n > 0 else None, n) for n in counts])
    if batch is None:
        ep.finish(torch.zeros((), device=device))
    return True
