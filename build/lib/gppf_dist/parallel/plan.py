"""Expert-parallel layout: which ranks hold which legos. Pure; no process groups.

With world size W and `ep_size` E, ranks form W/E expert-parallel (EP) groups of E consecutive
ranks; every lego layer's N units are split into E contiguous blocks, block e living on the rank
with EP rank e. Ranks with the same EP rank in different EP groups hold replicas of the same
legos and reduce their gradients together (the expert-data-parallel, EDP, group).

    W=4, E=2, N=4:   EP groups [0,1] [2,3]     EDP groups [0,2] [1,3]
                     legos 0,1 on ranks 0,2;   legos 2,3 on ranks 1,3

That contiguous split is the default. A `placement` (per lego layer, the EP rank of each lego;
every EP rank N/E legos per layer) replaces it, e.g. to co-locate the legos that frozen routes
use together (`parallel/placement.py`). Lego ids stay global whatever the placement.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EPLayout:
    world_size: int
    ep_size: int
    num_legos: int
    placement: tuple[tuple[int, ...], ...] = ()
    """Per lego layer, the EP rank holding each lego; () is the contiguous split."""

    def __post_init__(self) -> None:
        if self.ep_size < 1 or self.world_size % self.ep_size:
            raise ValueError(
                f"`parallel.ep_size`={self.ep_size} must divide the world size {self.world_size}"
            )
        if self.num_legos % self.ep_size:
            raise ValueError(
                f"`parallel.ep_size`={self.ep_size} must divide `model.num_legos`={self.num_legos}"
            )
        for layer, owners in enumerate(self.placement):
            counts = [sum(o == e for o in owners) for e in range(self.ep_size)]
            if len(owners) != self.num_legos or counts != [self.legos_per_rank] * self.ep_size:
                raise ValueError(
                    f"lego placement of layer {layer} is {list(owners)}: it must give each of the "
                    f"{self.ep_size} EP ranks {self.legos_per_rank} of the {self.num_legos} legos"
                )

    @property
    def legos_per_rank(self) -> int:
        return self.num_legos // self.ep_size

    def ep_rank(self, rank: int) -> int:
        return rank % self.ep_size

    def ep_group(self, rank: int) -> list[int]:
        start = rank - rank % self.ep_size
        return list(range(start, start + self.ep_size))

    def edp_group(self, rank: int) -> list[int]:
        return list(range(self.ep_rank(rank), self.world_size, self.ep_size))

    def all_ep_groups(self) -> list[list[int]]:
        return [self.ep_group(r) for r in range(0, self.world_size, self.ep_size)]

    def all_edp_groups(self) -> list[list[int]]:
        return [self.edp_group(e) for e in range(self.ep_size)]

    def owner(self, lego_id: int, layer: int) -> int:
        """EP rank that holds lego `lego_id` of lego layer `layer`."""
        if self.placement:
            return self.placement[layer][lego_id]
        return lego_id // self.legos_per_rank

    def owned(self, ep_rank: int, layer: int) -> list[int]:
        return [i for i in range(self.num_legos) if self.owner(i, layer) == ep_rank]
