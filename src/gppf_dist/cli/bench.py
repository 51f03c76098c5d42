"""`gppf-bench {data,decode,step,ep,throughput,placement,plan} [...]`: each prints a table, or
one JSON object with --json. `gppf-bench gpu-check` runs the GPU checks of DESIGN.md §6 (some of
these benchmarks among them) and prints one JSON summary."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "data": "gppf_dist.bench.data",
    "decode": "gppf_dist.bench.decode",
    "step": "gppf_dist.bench.step",
    "ep": "gppf_dist.bench.ep",
    "throughput": "gppf_dist.bench.throughput",
    "placement": "gppf_dist.bench.placement",
    "plan": "gppf_dist.bench.plan",
    "gpu-check": "gppf_dist.bench.gpu_check",
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in BENCHES:
        raise SystemExit(f"usage: gppf-bench {{{','.join(BENCHES)}}} [--json] [options]")
    module = importlib.import_module(BENCHES[args[0]])
    module.main(args[1:])


if __name__ == "__main__":
    main()
