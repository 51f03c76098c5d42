"""Who owns each parameter: the backbone (shared), one task, or one lego of one layer.

The only place that knows how ownership is spelled. Reduction (which gradients exist this step),
the optimizer (a task's learning-rate multiplier), expert parallelism (which parameters are
sharded) and the checkpoint format (one file per lego) all ask an `OwnerMap`.

Task-specific parameters are a task's head and its row of router logits; lego ids are global
within their layer, and layers are numbered in the backbone's forward order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from torch import nn

from gppf_dist.model.lego import LegoLayer


@dataclass(frozen=True)
class Owner:
    """One parameter's owner: exactly one of shared, a task, or a lego (layer, id)."""

    task: str | None = None
    lego: tuple[int, int] | None = None
    """(layer, lego id within the layer)."""

    @property
    def is_shared(self) -> bool:
        return self.task is None and self.lego is None

    @property
    def is_lego(self) -> bool:
        return self.lego is not None

    def __str__(self) -> str:
        if self.lego is not None:
            return f"lego {self.lego[1]} of layer {self.lego[0]}"
        return f"task {self.task}" if self.task is not None else "shared"


SHARED = Owner()


def task_owner(task: str) -> Owner:
    return Owner(task=task)


def lego_owner(layer: int, lego: int) -> Owner:
    return Owner(lego=(layer, lego))


class OwnerMap(Mapping[str, Owner]):
    """Parameter name → `Owner`, in the module's parameter order. Names it does not hold are
    shared (e.g. a wrapper's own parameters)."""

    def __init__(self, owners: Mapping[str, Owner]) -> None:
        self._owners = dict(owners)

    def __getitem__(self, name: str) -> Owner:
        return self._owners[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._owners)

    def __len__(self) -> int:
        return len(self._owners)

    def of(self, name: str) -> Owner:
        return self._owners.get(name, SHARED)

    def is_lego(self, name: str) -> bool:
        return self.of(name).is_lego

    def task(self, name: str) -> str | None:
        """The task owning `name`, or None (shared or a lego)."""
        return self.of(name).task

    def lego(self, name: str) -> tuple[int, int] | None:
        """(layer, lego id) of a lego parameter, or None."""
        return self.of(name).lego

    def produced(
        self, present: Iterable[str], active_legos: Mapping[str, set[tuple[int, int]]]
    ) -> set[str]:
        """Names of the parameters some rank has a gradient for this step: the shared ones, and
        for each present task its own parameters and the legos it routes to (`active_legos`:
        task -> {(layer, lego id)})."""
        present = set(present)
        legos = {lego for t in present for lego in active_legos.get(t, set())}
        return {
            name
            for name, owner in self._owners.items()
            if owner.is_shared
            or (owner.task is not None and owner.task in present)
            or (owner.lego is not None and owner.lego in legos)
        }

    @classmethod
    def of_gppf(cls, model: nn.Module) -> OwnerMap:
        """The owners of a GPPF model's parameters: `heads.<task>.*` and `router.logits.<task>`
        belong to their task, `<lego layer>.legos.<i>.*` to lego i of that layer."""
        lego_prefix: dict[str, Owner] = {}
        layers = [(n, m) for n, m in model.backbone.named_modules() if isinstance(m, LegoLayer)]  # type: ignore[union-attr]
        for li, (name, layer) in enumerate(layers):
            for i in range(len(layer.legos)):
                lego_prefix[f"backbone.{name}.legos.{i}."] = lego_owner(li, i)
        owners: dict[str, Owner] = {}
        for name, _ in model.named_parameters():
            parts = name.split(".")
            owner = SHARED
            if parts[0] == "heads":
                owner = task_owner(parts[1])
            elif parts[0] == "router" and parts[1] == "logits":
                owner = task_owner(parts[2])
            else:
                owner = next((o for p, o in lego_prefix.items() if name.startswith(p)), SHARED)
            owners[name] = owner
        return cls(owners)
