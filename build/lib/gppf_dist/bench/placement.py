"""`gppf-bench placement`: predicted local fraction of lego calls, placed from frozen routes vs
the contiguous split, over random route sets (pure: no processes).

Each case draws `--tasks` tasks with top-2 routes over `--layers` layers of N legos (N, E from
(4, 2), (8, 2), (8, 4)) and costs in [0.5, 3); both placements are scored with every task at
its most local rank, costs balanced (`parallel/placement.py`).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

from gppf_dist.parallel.placement import contiguous, place_legos, predicted_local


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="gppf-bench placement", description=__doc__)
    p.add_argument("--cases", type=int, default=200)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    placed, split = [], []
    for seed in range(args.cases):
        rng = random.Random(seed)
        legos, ep = rng.choice([(4, 2), (8, 2), (8, 4)])
        routes = {
            f"t{j}": [rng.sample(range(legos), 2) for _ in range(args.layers)]
            for j in range(args.tasks)
        }
        costs = {t: rng.uniform(0.5, 3.0) for t in routes}
        placed.append(predicted_local(routes, costs, place_legos(routes, costs, legos, ep), ep))
        split.append(predicted_local(routes, costs, contiguous(args.layers, legos, ep), ep))
    result = {
        "placed_mean": statistics.mean(placed),
        "contiguous_mean": statistics.mean(split),
        "ratio": statistics.mean(placed) / statistics.mean(split),
        "better_cases": sum(a > b + 1e-9 for a, b in zip(placed, split, strict=True)),
        "worse_cases": sum(a < b - 1e-9 for a, b in zip(placed, split, strict=True)),
        "cases": args.cases,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"predicted local fraction over {args.cases} random route sets: placed "
        f"{result['placed_mean']:.1%}, contiguous {result['contiguous_mean']:.1%}; better in "
        f"{result['better_cases']}, worse in {result['worse_cases']}"
    )
