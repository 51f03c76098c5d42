"""`gppf-shards`: build and check webdataset shard roots.

gppf-shards synth --out DIR [--samples-per-task N] [--val-per-task M] [--seed S]
gppf-shards synth-downstream --out DIR [--train-per-task 1000] [--test-per-task 500] [--seed S]
gppf-shards convert LAYOUT --src SRC --out DIR [--task T] [--split S] [--samples-per-shard N]
    [--seed S] [--workers N]   # shuffled, whole shards per process, a rerun keeps finished ones
gppf-shards build --spec gppf15m --src-root SRC --out DIR [--workers N] [--samples-per-shard N]
    [--only NAME ...] [--seed S]   # each spec dataset found under SRC, then a table
gppf-shards verify DIR            # every shard: size, sha256, count; every sample: decode+schema
gppf-shards index --root DIR      # sample offsets for shards written by other tools
gppf-shards upgrade DIR           # a root of the previous format (offsets in manifest.json)
gppf-shards inspect DIR --task T --out grid.png [--n 16] [--split S] [--seed S]  # annotated grid
gppf-shards --plugin my_task.py verify DIR   # a root holding a task type of your own
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gppf_dist.cli.usage import examples
from gppf_dist.config.plugins import load_plugins
from gppf_dist.data.convert.readers import LAYOUTS
from gppf_dist.data.convert.run import (
    DEFAULT_SAMPLES_PER_SHARD,
    DEFAULT_SEED,
    DEFAULT_SHARD_BYTES,
    write_converted,
)
from gppf_dist.data.format.manifest import ShardInfo
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from gppf_dist.data.synth.downstream import write_downstream_suite
from gppf_dist.data.tools.inspect import inspect_task
from gppf_dist.data.tools.verify import format_problems, format_table, verify_root


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


def _synth_downstream(args: argparse.Namespace) -> int:
    manifest = write_downstream_suite(
        Path(args.out),
        train_per_task=args.train_per_task,
        test_per_task=args.test_per_task,
        seed=args.seed,
        samples_per_shard=args.samples_per_shard,
        tasks=args.tasks,
    )
    for name, tm in manifest.tasks.items():
        print(
            f"{name:12s} {len(tm.label_space['classes']):2d} classes  "
            f"train {tm.num_samples('train')}  val (test) {tm.num_samples('val')}"
        )
    print(f"wrote the downstream suite ({len(manifest.tasks)} tasks) to {args.out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    root = args.dir or args.root
    if root is None:
        raise ValueError("verify needs the shard root: gppf-shards verify DIR")
    reports = verify_root(Path(root))
    problems = format_problems(reports)
    if problems:
        print(problems, file=sys.stderr)
    print(format_table(reports))
    return 1 if any(r.problems for r in reports) else 0


def _index(args: argparse.Namespace) -> int:
    from gppf_dist.data.format.index import index_root

    done, kept = index_root(Path(args.root), force=args.force)
    print(f"indexed {done} shards ({kept} already had sample offsets) in {args.root}/manifest.json")
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    from gppf_dist.data.format.index import upgrade_root

    manifest = upgrade_root(Path(args.dir))
    if manifest is None:
        print(f"{args.dir} is already in the current format; nothing to do")
        return 0
    splits = sum(len(t.splits) for t in manifest.tasks.values())
    print(f"upgraded {args.dir}: {len(manifest.tasks)} tasks, {splits} splits; sample offsets "
          f"now in {args.dir}/index/")  # fmt: skip
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    reader, default_task = LAYOUTS[args.layout]
    src = Path(args.src)
    if not src.exists():
        raise ValueError(f"convert: --src {src} does not exist")
    conv = reader(src, Path(args.images) if args.images else None, args.split)
    task = args.task or default_task
    start = time.perf_counter()
    bar = tqdm(total=len(conv.items), unit="img", desc=f"{task} {args.split}", disable=args.quiet)
    with bar:
        manifest, results = write_converted(
            conv,
            Path(args.out),
            task,
            args.split,
            samples_per_shard=args.samples_per_shard,
            max_shard_bytes=int(args.shard_mb * 1024 * 1024),
            seed=args.seed,
            workers=args.workers,
            progress=bar.update,
        )
    shards = manifest.tasks[task].splits[args.split]
    count = sum(s.samples for s in shards)
    kept = sum(r.resumed for r in results)
    cap = int(args.shard_mb * 1024 * 1024)
    big = sum(s.bytes > cap for s in shards)
    if big:
        print(f"{big} shard(s) above --shard-mb {args.shard_mb:g}: lower --samples-per-shard")
    print(
        f"{task} ({conv.type}) {args.split}: {count} samples in {len(shards)} shards "
        f"({kept} kept from an earlier run) in {time.perf_counter() - start:.1f}s; "
        f"skipped {dict(sorted(conv.skipped.items())) or 'none'}"
    )
    if args.split == "train":
        _warn_few_streams(shards, args.out)
    return 0


def _build(args: argparse.Namespace) -> int:
    from gppf_dist.data.convert.build import build_corpus, format_build_table
    from gppf_dist.data.convert.corpus_spec import load_corpus_spec

    spec = load_corpus_spec(args.spec)
    report = build_corpus(
        spec,
        Path(args.src_root),
        Path(args.out),
        only=args.only,
        samples_per_shard=args.samples_per_shard,
        seed=args.seed,
        workers=args.workers,
        log=lambda line: print(line, flush=True),
    )
    print(format_build_table(report))
    code = report.exit_code()
    if code == 2:
        raise ValueError(
            f"build: found none of spec {spec.name!r}'s datasets under --src-root "
            f"{args.src_root} (each missing path is in the table above)"
        )
    return code


def _warn_few_streams(shards: list[ShardInfo], root: str) -> None:
    """A run's default `data.streams_per_task` needs as many shards, or shards with sample
    offsets (our writer records them) and at least as many samples: say so when it has neither."""
    from gppf_dist.config.schema import DataSection

    streams = DataSection().streams_per_task
    samples = sum(s.samples for s in shards)
    unindexed = any(not s.has_offsets for s in shards)
    if len(shards) >= streams or (not unindexed and samples >= streams):
        return
    fix = (
        f"run `gppf-shards index --root {root}` to add sample offsets"
        if unindexed
        else f"convert at least {streams} samples"
    )
    print(
        f"warning: {len(shards)} train shard(s) with {samples} samples cannot feed a run's default "
        f"data.streams_per_task={streams}: {fix}, or train with data.streams_per_task set to at "
        f"most {max(1, len(shards) if unindexed else samples)} (a divisor of each "
        "task's batch_size)",
        file=sys.stderr,
    )


def _inspect(args: argparse.Namespace) -> int:
    res = inspect_task(
        Path(args.dir), args.task, Path(args.out), n=args.n, split=args.split, seed=args.seed
    )
    print(
        f"{res.task} ({res.type}) {res.split}: drew {len(res.keys)} samples into {res.path} "
        f"({res.size[0]}x{res.size[1]}); skipped {res.skipped or 'none'}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gppf-shards",
        description=__doc__.splitlines()[0],
        **examples("gppf-shards synth --out shards", "gppf-shards convert --help"),
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or .py file first (a task type of your own, as `plugins=[...]` "
        "in a run); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser(
        "synth",
        help="write the synthetic 8-task corpus",
        **examples("gppf-shards synth --out shards --samples-per-task 512"),
    )
    synth.add_argument("--out", required=True, help="shard root to write")
    synth.add_argument("--samples-per-task", type=int, default=512)
    synth.add_argument("--val-per-task", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--samples-per-shard", type=int, default=64)
    synth.set_defaults(func=_synth)
    down = sub.add_parser(
        "synth-downstream",
        help="write the synthetic downstream suite (VTAB-like, 6 tasks)",
        **examples("gppf-shards synth-downstream --out downstream --train-per-task 200"),
    )
    down.add_argument("--out", required=True, help="shard root to write")
    down.add_argument("--train-per-task", type=int, default=1000, help="`train` examples")
    down.add_argument("--test-per-task", type=int, default=500, help="fixed test set (`val`)")
    down.add_argument("--seed", type=int, default=0)
    down.add_argument("--samples-per-shard", type=int, default=64, help="rounded to whole blocks")
    down.add_argument("--tasks", nargs="+", help="write only these tasks (default: all)")
    down.set_defaults(func=_synth_downstream)
    verify = sub.add_parser(
        "verify",
        help="check every shard and sample against the manifest and schemas",
        **examples("gppf-shards verify shards"),
    )
    verify.add_argument("dir", nargs="?", help="shard root holding manifest.json")
    verify.add_argument("--root", help="same as DIR (kept for old scripts)")
    verify.set_defaults(func=_verify)
    index = sub.add_parser(
        "index",
        help="add per-sample byte offsets to the manifest (shards by other tools)",
        **examples("gppf-shards index --root shards"),
    )
    index.add_argument("--root", required=True, help="shard root holding manifest.json")
    index.add_argument("--force", action="store_true", help="rebuild offsets that exist too")
    index.set_defaults(func=_index)
    upgrade = sub.add_parser(
        "upgrade",
        help="convert a root of the previous format (offsets inside manifest.json) in place",
        **examples("gppf-shards upgrade shards"),
    )
    upgrade.add_argument("dir", help="shard root holding manifest.json")
    upgrade.set_defaults(func=_upgrade)
    convert = sub.add_parser(
        "convert",
        help="convert a standard dataset layout into shards",
        **examples(
            "gppf-shards convert imagefolder --src my_set/train --out mine --task colors",
            "gppf-shards convert coco-det --src /data/coco --split val --out gppf15m --workers 8",
        ),
    )
    convert.add_argument("layout", choices=sorted(LAYOUTS))
    convert.add_argument("--src", required=True, help="dataset folder, COCO JSON or CSV file")
    convert.add_argument("--out", required=True, help="shard root (manifest merged if present)")
    convert.add_argument("--task", help="task name (default: per layout, e.g. det)")
    convert.add_argument("--split", choices=["train", "val"], default="train")
    convert.add_argument(
        "--images",
        help="image folder for coco-*, aic-keypoints and attr-csv (default: found beside)",
    )
    convert.add_argument("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD)
    convert.add_argument(
        "--shard-mb",
        type=float,
        default=DEFAULT_SHARD_BYTES / 2**20,
        help="warn about shards above this size (--samples-per-shard decides the cut)",
    )
    convert.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed of the shuffled sample order"
    )
    convert.add_argument(
        "--workers", type=int, default=1, help="processes writing whole shards (same bytes)"
    )
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(func=_convert)
    build = sub.add_parser(
        "build",
        help="convert every dataset of a corpus spec found under a source root",
        **examples(
            "gppf-shards build --spec gppf15m --src-root /data --out /shards --workers 8",
            "gppf-shards build --spec gppf15m --src-root /data --out /shards --only reid coco",
        ),
    )
    build.add_argument(
        "--spec", default="gppf15m", help="shipped spec name or a spec .yaml path (default gppf15m)"
    )
    build.add_argument(
        "--src-root", required=True, help="folder holding each dataset's folder (spec `folder`)"
    )
    build.add_argument("--out", required=True, help="shard root (manifest merged if present)")
    build.add_argument(
        "--only", nargs="+", metavar="NAME", help="only these datasets or tasks (spec names)"
    )
    build.add_argument("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD)
    build.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed of the shuffled sample order"
    )
    build.add_argument(
        "--workers", type=int, default=1, help="processes writing whole shards (same bytes)"
    )
    build.set_defaults(func=_build)
    insp = sub.add_parser(
        "inspect",
        help="draw samples of a task with annotations into a PNG",
        **examples("gppf-shards inspect shards --task det --n 16 --out det.png"),
    )
    insp.add_argument("dir", help="shard root holding manifest.json")
    insp.add_argument("--task", required=True, help="task name in the manifest")
    insp.add_argument("--n", type=int, default=16, help="samples to draw (default 16)")
    insp.add_argument("--out", required=True, help="PNG file to write")
    insp.add_argument("--split", choices=["train", "val"], default="train")
    insp.add_argument("--seed", type=int, help="draw a seeded random sample, not the first N")
    insp.set_defaults(func=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_plugins(args.plugin)
        return int(args.func(args))
    except ValueError as exc:
        print(f"gppf-shards: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
