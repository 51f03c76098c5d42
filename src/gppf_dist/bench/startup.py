"""`gppf-bench startup`: one rank's start-up on a corpus of any size, without the corpus.

    gppf-bench startup [--samples 15000000] [--tasks 8] [--streams 2048] [--world 1024]
                       [--root DIR] [--rank R] [--json]

Writes (or reuses, when `<root>/bench-startup.json` says it has these parameters) a synthetic
corpus in the real on-disk format: `manifest.json`, the offsets files and every tar shard, the
shards as sparse files of their full size (nothing is read from them). Samples are split over
the tasks as GPPF-15M is (the largest task two thirds of them), 10,000 per shard, 110 KiB each
on average. Then, in a fresh process per case, it runs the start-up path every rank of a
`--world`-rank job runs, on the rank with the most streams:

    load_run_config -> validate_run (the manifest, for the run's tasks) -> TaskSet.build ->
    the plan -> TaskLoaders.open at the saved stream positions -> where each slot of the first
    step starts (`TaskLoader.next_slots`, and its byte range from the offsets file)

for a fresh start and for a resume at mid-epoch positions (epoch 1, half way). Each prints
`startup_s` (wall) and `cpu_s` of that path, `rss_mib` (peak resident memory above a bare
`import torch`, the project's imports included), `stat_calls` (`os.stat`/`os.lstat` calls in
the path) and `shard_stat_calls` (those of a shard: none, the launcher checks them), and once
`manifest_mib` and `node_check_s`/`node_stat_calls`: the shard check the launcher (or a node's
local rank 0 under `launcher=none`) makes once before the workers start. `--json` prints one object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TASK_SHARES = {
    "face": 10.0,
    "cls_object": 1.5,
    "det": 1.0,
    "reid": 0.8,
    "cls_scene": 0.6,
    "seg": 0.5,
    "attr": 0.35,
    "pose": 0.25,
}
"""Relative task sizes (of 15: the largest task 10M of GPPF-15M's 15M samples)."""
SAMPLES_PER_SHARD = 10_000
SAMPLE_KIB = 110
VAL_SAMPLES = 5_000
PER_STREAM = 2
"""Samples per stream and step: each task's batch is `streams` x this."""
MARKER = "bench-startup.json"


def task_sizes(samples: int, tasks: int) -> dict[str, int]:
    """Train samples per task: the first `tasks` of TASK_SHARES, scaled to `samples`."""
    if not 1 <= tasks <= len(TASK_SHARES):
        raise ValueError(f"--tasks must be in 1..{len(TASK_SHARES)}, got {tasks}")
    names = list(TASK_SHARES)[:tasks]
    total = sum(TASK_SHARES[n] for n in names)
    sizes = {n: int(samples * TASK_SHARES[n] / total) for n in names}
    sizes[names[0]] += samples - sum(sizes.values())
    return sizes


def _shard_offsets(rng: np.random.Generator, n: int) -> np.ndarray:
    """n + 1 tar offsets of n samples of about SAMPLE_KIB each (whole 512-byte blocks)."""
    kib = rng.integers(SAMPLE_KIB // 2, 3 * SAMPLE_KIB // 2, size=n, dtype=np.uint64)
    offsets = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(kib * 1024, out=offsets[1:])
    return offsets


def write_corpus(root: Path, samples: int, tasks: int) -> None:
    """The synthetic corpus (see the module doc); reused when its marker matches."""
    from gppf_dist.data.format.manifest import Manifest, ShardInfo, TaskManifest, save_manifest
    from gppf_dist.data.synth.corpus import SYNTH_TASKS

    params = {"samples": samples, "tasks": tasks, "samples_per_shard": SAMPLES_PER_SHARD,
              "sample_kib": SAMPLE_KIB, "format": 2}  # fmt: skip
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return
    marker.unlink(missing_ok=True)
    known = {t.name: t for t in SYNTH_TASKS}
    rng = np.random.default_rng(0)
    manifest = Manifest()
    for name, n in task_sizes(samples, tasks).items():
        splits: dict[str, list[ShardInfo]] = {}
        for split, count in (("train", n), ("val", VAL_SAMPLES)):
            folder = root / name / split
            folder.mkdir(parents=True, exist_ok=True)
            shards = []
            for k, start in enumerate(range(0, count, SAMPLES_PER_SHARD)):
                size = min(SAMPLES_PER_SHARD, count - start)
                offsets = _shard_offsets(rng, size)
                rel = f"{name}/{split}/bench-{k:06d}.tar"
                nbytes = int(offsets[-1]) + 1024  # the end-of-archive blocks
                with open(root / rel, "wb") as f:
                    f.truncate(nbytes)  # sparse: the size without the bytes
                shards.append(ShardInfo(rel, size, nbytes, "0" * 64, offsets))  # type: ignore[arg-type]
            splits[split] = shards
        task = known[name]
        manifest.tasks[name] = TaskManifest(name, task.type, "bench", task.label_space, splits)
    save_manifest(root, manifest)
    marker.write_text(json.dumps(params))


def _overrides(root: Path, run_dir: Path, streams: int, tasks: list[str]) -> list[str]:
    out = ["experiment=demo", "launcher=none", f"data.root={root}", f"run.dir={run_dir}",
           f"data.streams_per_task={streams}", "data.num_workers=0",
           f"simt.only=[{','.join(tasks)}]"]  # fmt: skip
    return out + [f"simt.tasks.{t}.batch_size={streams * PER_STREAM}" for t in tasks]


def prepare_run(
    root: Path, run_dir: Path, streams: int, world: int, rank: int | None
) -> tuple[Path, int, dict[str, dict[int, list[int]]]]:
    """config.yaml as the launcher writes it; the rank measured; its mid-epoch positions."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gppf_dist.config.load import save_run_config, to_run_config
    from gppf_dist.config.resources import conf_dir
    from gppf_dist.config.store import register_schema
    from gppf_dist.data.format.manifest import load_manifest
    from gppf_dist.data.load.streams import stream_units
    from gppf_dist.simt.costs import CostTable
    from gppf_dist.simt.taskset import TaskSet

    manifest = load_manifest(root, check_files=False)
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        raw = compose("train", overrides=_overrides(root, run_dir, streams, list(manifest.tasks)))
    cfg = to_run_config(raw)
    config_path = run_dir / "config.yaml"
    save_run_config(cfg, config_path)
    plan = TaskSet.build(cfg, manifest.label_spaces()).plan(CostTable(), world)
    if rank is None:
        load = [sum(len(w.stream_ids) for w in plan.rank_work(r)) for r in range(world)]
        rank = int(np.argmax(load))
    positions: dict[str, dict[int, list[int]]] = {}
    for work in plan.rank_work(rank):
        sizes = [s.samples for s in manifest.task(work.task).shards("train")]
        positions[work.task] = {}
        for stream in work.stream_ids:
            length = sum(u.size for u in stream_units(work.task, sizes, streams, stream))
            positions[work.task][stream] = [1, length // 2]
    return config_path, rank, positions


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


class _StatCounter:
    """Counts os.stat / os.lstat calls (pathlib's and os.path's go through them), and those of
    a shard (a `.tar` file)."""

    def __init__(self) -> None:
        self.calls = 0
        self.shard_calls = 0
        self._saved = (os.stat, os.lstat)

    def _count(self, path: Any) -> None:
        self.calls += 1
        self.shard_calls += str(path).endswith(".tar")

    def __enter__(self) -> _StatCounter:
        stat, lstat = self._saved

        def counted_stat(path: Any, *a: Any, **k: Any) -> Any:
            self._count(path)
            return stat(path, *a, **k)

        def counted_lstat(path: Any, *a: Any, **k: Any) -> Any:
            self._count(path)
            return lstat(path, *a, **k)

        os.stat, os.lstat = counted_stat, counted_lstat  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.stat, os.lstat = self._saved  # type: ignore[assignment]


def measure(config: Path, world: int, rank: int, positions_file: Path | None) -> dict[str, Any]:
    """One rank's start-up path in this (fresh) process; see the module doc."""
    import torch

    base = _status_mib("VmRSS")
    from gppf_dist.config.load import load_run_config
    from gppf_dist.data.load.streams import StreamPosition
    from gppf_dist.data.load.task_loaders import TaskLoaders
    from gppf_dist.preflight.validate import validate_run
    from gppf_dist.simt.costs import CostTable
    from gppf_dist.simt.taskset import TaskSet

    started, cpu = time.perf_counter(), time.process_time()
    with _StatCounter() as stats:
        cfg = load_run_config(config)
        manifest = validate_run(cfg, world, check_files=False)
        taskset = TaskSet.build(cfg, manifest.label_spaces())
        plan = taskset.plan(CostTable(), world)
        saved: dict[str, dict[int, Any]] = {}
        if positions_file is not None:
            raw = json.loads(positions_file.read_text())
            saved = {
                t: {int(s): StreamPosition(*p) for s, p in ps.items()} for t, ps in raw.items()
            }
        loaders = TaskLoaders(cfg, manifest, taskset.specs, taskset.types, torch.device("cpu"))
        loaders.open(plan.rank_work(rank), saved)
        slots = 0
        for prefetcher in loaders.active.values():
            for _, shard, sample in prefetcher.loader.next_slots():  # type: ignore[attr-defined]
                shard.segment(sample, sample + 1)
                slots += 1
    return {
        "startup_s": round(time.perf_counter() - started, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "rss_mib": round(_status_mib("VmHWM") - base, 1),
        "stat_calls": stats.calls,
        "shard_stat_calls": stats.shard_calls,
        "rank_streams": sum(len(w.stream_ids) for w in plan.rank_work(rank)),
        "slots": slots,
    }


def node_check(root: Path) -> dict[str, Any]:
    """The launcher's once-per-launch shard check, timed."""
    from gppf_dist.data.format.manifest import check_shard_files, load_manifest

    manifest = load_manifest(root, check_files=False)
    started = time.perf_counter()
    with _StatCounter() as stats:
        check_shard_files(root, manifest)
    return {"node_check_s": round(time.perf_counter() - started, 3),
            "node_stat_calls": stats.calls}  # fmt: skip


def _child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "gppf_dist.bench.startup", "--measure", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the measured rank failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    samples: int, tasks: int, streams: int, world: int, root: Path, rank: int | None
) -> dict[str, Any]:
    from gppf_dist.data.format.manifest import MANIFEST_NAME

    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_corpus(root, samples, tasks)
    written_s = time.perf_counter() - started
    run_dir = root / "bench-run"
    config, rank, positions = prepare_run(root, run_dir, streams, world, rank)
    positions_file = run_dir / "positions.json"
    positions_file.write_text(json.dumps(positions))
    common = [str(config), "--world", str(world), "--rank", str(rank)]
    fresh = _child(common)
    resumed = _child([*common, "--positions", str(positions_file)])
    return {
        "samples": samples, "tasks": tasks, "streams": streams, "world": world, "rank": rank,
        "manifest_mib": round((root / MANIFEST_NAME).stat().st_size / 2**20, 3),
        "corpus_s": round(written_s, 1),
        **fresh,
        "resume": resumed,
        **node_check(root),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gppf-bench startup", description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=15_000_000, help="train samples in all")
    p.add_argument("--tasks", type=int, default=8, help=f"1..{len(TASK_SHARES)}")
    p.add_argument("--streams", type=int, default=2048, help="canonical streams per task")
    p.add_argument("--world", type=int, default=1024, help="ranks of the job")
    p.add_argument("--root", help="corpus folder (default runs/bench-startup/<samples>-<tasks>)")
    p.add_argument("--rank", type=int, help="the rank measured (default: the most streams)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # the child: config.yaml to measure
    p.add_argument("--positions", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        positions = Path(args.positions) if args.positions else None
        print(json.dumps(measure(Path(args.measure), args.world, args.rank, positions)))
        return
    root = Path(args.root or f"runs/bench-startup/{args.samples}-{args.tasks}")
    result = run(args.samples, args.tasks, args.streams, args.world, root, args.rank)
    if args.json:
        print(json.dumps(result))
        return
    resume = result.pop("resume")
    for key, value in result.items():
        print(f"{key:16s} {value}")
    print("resume at mid-epoch positions:")
    for key, value in resume.items():
        print(f"  {key:14s} {value}")


if __name__ == "__main__":
    main()
