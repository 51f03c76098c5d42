"""Expert-parallel layout: which ranks hold which legos. Pure; no process groups.

With world size W and `ep_size` E, ranks form W/E expert-parallel (EP) groups of E consecutive
ranks; every lego layer's N units are split into E contiguous blocks, block e living on the rank
with EP rank e. Ranks with the same EP rank in different EP groups hold replicas of the same
legos and reduce their gradients together (the expert-data-parallel, EDP, group).

    W=4, E=2, N=4:   EP groups [0,1] [2,3]     EDP groups [0,2] [1,3]
                     legos 0,1 on ranks 0,2;   legos 2,3 on ranks 1,3
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EPLayout:
    world_size: int
    ep_size: int
    num_legos: int

    def __post_init__(self) -> None:
        if self.ep_size < 1 or self.world_size % self.ep_size:
            raise ValueError(
                f"`parallel.ep_size`={self.ep_size} must divide the world size {self.world_size}"
            )
        if self.num_legos % self.ep_size:
            raise ValueError(
                f"`parallel.ep_size`={self.ep_size} must divide `model.num_legos`={self.num_legos}"
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

    def owner(self, lego: int) -> int:
        """EP rank that holds lego `lego` (same for every layer)."""
        return lego // self.legos_per_rank

    def owned(self, ep_rank: int) -> list[int]:
        n = self.legos_per_rank
        return list(range(ep_rank * n, (ep_rank + 1) * n))
