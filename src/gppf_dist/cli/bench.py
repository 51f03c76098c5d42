"""`gppf-bench COMMAND [--json] [options]`: each benchmark prints a table, or one JSON object
with --json; `gppf-bench gpu-check` runs the GPU checks of DESIGN.md §6 (some of these benchmarks
among them) and prints one JSON summary. `gppf-bench COMMAND --help` lists a command's flags.
Figures and how they were taken: BENCHMARKS.md.
"""

from __future__ import annotations

import importlib
import sys

from gppf_dist.cli.usage import HELP_FLAGS

BENCHES = {
    "data": "gppf_dist.bench.data",
    "decode": "gppf_dist.bench.decode",
    "step": "gppf_dist.bench.step",
    "ep": "gppf_dist.bench.ep",
    "throughput": "gppf_dist.bench.throughput",
    "placement": "gppf_dist.bench.placement",
    "plan": "gppf_dist.bench.plan",
    "transfer": "gppf_dist.experiments.transfer",
    "startup": "gppf_dist.bench.startup",
    "ckpt": "gppf_dist.bench.ckpt",
    "memory": "gppf_dist.bench.memory",
    "gpu-check": "gppf_dist.bench.gpu_check",
}


EXAMPLES = {
    "data": ("loader samples/s vs a plain webdataset pipeline", "gppf-bench data --json"),
    "decode": ("decode + augment images/s per core vs Pillow", "gppf-bench decode --images 64"),
    "step": ("a SIMT step vs a bare PyTorch loop", "gppf-bench step --json"),
    "ep": ("a lego layer at E=1, E=2 and DeepSpeed MoE", "gppf-bench ep --json --blocks 6"),
    "throughput": ("training images/s and MFU of one device", "gppf-bench throughput --json"),
    "placement": ("local lego calls: route-aware vs contiguous", "gppf-bench placement --json"),
    "plan": ("the SIMT plan at any world size", "gppf-bench plan --world 8,64,1024"),
    "transfer": ("what pre-training buys on the downstream suite", "gppf-bench transfer"),
    "ckpt": (
        "a checkpoint's blocking time and bytes hashed at save and resume",
        "gppf-bench ckpt --params 100000000 --world 2 --json",
    ),
    "startup": (
        "one rank's start-up on a corpus of any size",
        "gppf-bench startup --samples 15000000 --streams 2048 --world 1024",
    ),
    "memory": (
        "a recipe's memory plan per task; --check: predicted vs measured peaks",
        "gppf-bench memory --experiment gppf15m_r50 --world 64 --json",
    ),
    "gpu-check": ("the GPU checks of DESIGN.md §6", "gppf-bench gpu-check --out check.json"),
}
"""Per command: what it measures, and an example (shown by `gppf-bench --help`)."""


def usage() -> str:
    rows = [f"  {name:<11} {EXAMPLES.get(name, ('', ''))[0]}" for name in BENCHES]
    examples = [f"  {EXAMPLES[name][1]}" for name in ("plan", "step") if name in BENCHES]
    return "\n".join(
        [f"usage: gppf-bench {{{','.join(BENCHES)}}} [--json] [options]", "", __doc__.strip()]
        + ["", "commands:", *rows, "", "examples:", *examples]
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in HELP_FLAGS:
        print(usage())
        return
    if not args or args[0] not in BENCHES:
        raise SystemExit(f"{usage()}\n\ngppf-bench: name a command")
    module = importlib.import_module(BENCHES[args[0]])
    if not any(arg in HELP_FLAGS for arg in args[1:]) or args[0] not in EXAMPLES:
        module.main(args[1:])
        return
    try:
        module.main(args[1:])  # argparse prints the flags and exits
    finally:
        print(f"\nexample:\n  {EXAMPLES[args[0]][1]}")


if __name__ == "__main__":
    main()
