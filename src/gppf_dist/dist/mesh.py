"""The only place that creates sub-process-groups (besides the default one in env.py).

`torch.distributed.new_group` is collective over the default group: every rank must create every
group, in the same order, even the groups it is not a member of. So all groups are created once,
here, at start-up; steps only select among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import torch.distributed as dist


class GroupLayout(Protocol):
    """Which ranks form each expert-parallel and expert-data-parallel group: the pure layout
    one layer up (`parallel/plan.py`'s `EPLayout`) answers it; this module only creates groups."""

    world_size: int
    ep_size: int

    def all_ep_groups(self) -> list[list[int]]: ...

    def all_edp_groups(self) -> list[list[int]]: ...

    def ep_group(self, rank: int) -> list[int]: ...

    def edp_group(self, rank: int) -> list[int]: ...


@dataclass(frozen=True)
class ExpertGroups:
    ep: dist.ProcessGroup | None
    """This rank's expert-parallel group (lego dispatch); None when ep_size == 1."""
    edp: dist.ProcessGroup | None
    """This rank's expert-data-parallel group (lego replicas' gradients)."""
    ep_ranks: tuple[int, ...]
    edp_ranks: tuple[int, ...]


def build_expert_groups(layout: GroupLayout, rank: int) -> ExpertGroups:
    if layout.ep_size == 1:
        return ExpertGroups(None, dist.group.WORLD, (rank,), tuple(range(layout.world_size)))
    ep = edp = None
    for ranks in layout.all_ep_groups():
        group = dist.new_group(ranks)
        if rank in ranks:
            ep = group
    for ranks in layout.all_edp_groups():
        group = dist.new_group(ranks)
        if rank in ranks:
            edp = group
    return ExpertGroups(ep, edp, tuple(layout.ep_group(rank)), tuple(layout.edp_group(rank)))


def build_checkpoint_group(timeout_s: float) -> dist.ProcessGroup:
    """Every rank, over gloo: the group a background checkpoint save agrees and publishes on
    (`checkpoint/store.py`). Its collectives run on the save's thread while the step's run on
    the default group, so they need a group of their own (two threads must never share one);
    gloo because what they exchange is small Python objects on the host, also under NCCL.
    `timeout_s`: `parallel.timeout_s`, as the default group's (gloo's own default is 30 min)."""
    return dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
