"""How far each shard's label mix is from its task's: sorted shards starve batches of classes.

A stream reads a group of shards at a time (`data.shards_per_group`), so a shard holding a few
classes feeds batches of a few classes. The distance is the total variation distance (TVD,
half the L1 distance) between a shard's label frequencies and the split's. Even a shuffled shard
of n samples is a random draw and is off by sampling noise, about
0.5 * sum_k sqrt(2 p_k (1 - p_k) / (pi n)) (the mean absolute deviation of a binomial count), which
is large for small shards over many classes; so a shard is flagged when its TVD is above
`MIN_TVD` and above `NOISE_FACTOR` times that noise, and only with at least `MIN_SAMPLES` samples.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

MIN_SAMPLES = 50
MIN_TVD = 0.3
NOISE_FACTOR = 2.0


@dataclass(frozen=True)
class MixWarning:
    shard: str
    tvd: float
    threshold: float
    samples: int

    def __str__(self) -> str:
        return (
            f"WARNING {self.shard}: its label mix is {self.tvd:.2f} (total variation distance) "
            f"from its task's over {self.samples} samples (threshold {self.threshold:.2f}): the "
            "shard looks sorted by label; reconvert with `gppf-shards convert` (it shuffles) or "
            "raise data.shards_per_group"
        )


def tvd(counts: Counter, mix: dict[int, float]) -> float:
    """Total variation distance between `counts` (normalised) and the distribution `mix`."""
    n = sum(counts.values())
    labels = set(counts) | set(mix)
    return 0.5 * sum(abs(counts.get(k, 0) / n - mix.get(k, 0.0)) for k in labels)


def noise_tvd(mix: dict[int, float], n: int) -> float:
    """The TVD a random draw of `n` samples from `mix` shows on average (normal approximation)."""
    return 0.5 * sum(math.sqrt(2 * p * (1 - p) / (math.pi * n)) for p in mix.values())


def mix_warnings(shards: dict[str, Counter]) -> list[MixWarning]:
    """The shards (path -> label counts) whose mix is far from that of all of them together."""
    total: Counter = Counter()
    for counts in shards.values():
        total.update(counts)
    n_all = sum(total.values())
    if not n_all:
        return []
    mix = {k: c / n_all for k, c in total.items()}
    out = []
    for path, counts in shards.items():
        n = sum(counts.values())
        if n < MIN_SAMPLES or n == n_all:
            continue
        threshold = max(MIN_TVD, NOISE_FACTOR * noise_tvd(mix, n))
        distance = tvd(counts, mix)
        if distance > threshold:
            out.append(MixWarning(path, distance, threshold, n))
    return out
