"""Evaluation over embeddings gathered from every rank (reid retrieval, face verification).

Both metrics need all validation embeddings at once: each rank keeps its embeddings plus the
target fields the score needs; `compute` concatenates every rank's parts and scores them once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Score = Callable[..., dict[str, float]]


class EmbeddingMetric:
    def __init__(self, fields: tuple[str, ...], score: Score, empty: dict[str, float]) -> None:
        self.fields, self.score, self.empty = fields, score, empty
        self.parts: list[dict[str, torch.Tensor]] = []

    def update(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        part = {"emb": outputs["emb"].detach().float().cpu()}
        part.update({f: targets[f].cpu() for f in self.fields})
        self.parts.append(part)

    def state(self) -> list[dict[str, torch.Tensor]]:
        return list(self.parts)

    def compute(self, states: list[list[dict[str, torch.Tensor]]]) -> dict[str, float]:
        parts = [p for s in states for p in s]
        if not parts:
            return dict(self.empty)
        cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return self.score(cat["emb"], *(cat[f] for f in self.fields))
