"""`gppf-shards`: build and check webdataset shard roots.

gppf-shards synth --out DIR [--samples-per-task N] [--val-per-task M] [--seed S]
gppf-shards verify --root DIR      # recompute every shard's sha256 against the manifest
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from gppf_dist.data.manifest import load_manifest
from gppf_dist.data.synth import write_synthetic_corpus


def _synth(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    manifest = write_synthetic_corpus(
        Path(args.out),
        samples_per_task=args.samples_per_task,
        val_per_task=args.val_per_task,
        seed=args.seed,
        samples_per_shard=args.samples_per_shard,
    )
    seconds = time.perf_counter() - start
    total = sum(tm.num_samples(s) for tm in manifest.tasks.values() for s in tm.splits)
    for name, tm in manifest.tasks.items():
        counts = ", ".join(
            f"{s}: {tm.num_samples(s)} in {len(v)} shards" for s, v in tm.splits.items()
        )
        print(f"{name:12s} {tm.type:15s} {counts}")
    print(
        f"wrote {total} samples to {args.out} in {seconds:.1f}s "
        f"({total / max(seconds, 1e-9):.0f} samples/s)"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    root = Path(args.root)
    manifest = load_manifest(root)
    bad = 0
    for tm in manifest.tasks.values():
        for shards in tm.splits.values():
            for shard in shards:
                sha = hashlib.sha256()
                with open(root / shard.path, "rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        sha.update(chunk)
                if sha.hexdigest() != shard.sha256:
                    print(f"sha256 mismatch: {shard.path}", file=sys.stderr)
                    bad += 1
    print(f"{'FAILED' if bad else 'OK'}: {bad} bad shard(s)")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gppf-shards", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write the synthetic 8-task corpus")
    synth.add_argument("--out", required=True, help="shard root to write")
    synth.add_argument("--samples-per-task", type=int, default=512)
    synth.add_argument("--val-per-task", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--samples-per-shard", type=int, default=64)
    synth.set_defaults(func=_synth)
    verify = sub.add_parser("verify", help="check shard sha256 digests against the manifest")
    verify.add_argument("--root", required=True, help="shard root holding manifest.json")
    verify.set_defaults(func=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"gppf-shards: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
