"""Whole shards of a conversion, written by one process or several, identically.

Shard k of a conversion holds the items at positions [k*n, (k+1)*n) of the shuffled order (n =
samples per shard), so its bytes depend on k alone: any number of worker processes writes the
same files. Each shard goes to a temporary name and is renamed when complete; then a marker
`<task>/<split>/.convert/<shard>.json` records its `ShardInfo`, the items it skipped and the
fingerprint of the conversion. A rerun with the same fingerprint keeps a shard whose marker
and file (size and sha256) agree, and writes the others.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gppf_dist.data.convert.layouts.base import Converted, ItemError, Members
from gppf_dist.data.decode.sample import SampleError
from gppf_dist.data.format.manifest import ShardInfo
from gppf_dist.data.format.schema import check_annotation
from gppf_dist.data.format.writer import write_shard_file
from gppf_dist.data.tools.verify import file_sha256

log = logging.getLogger(__name__)

MARKER_DIR = ".convert"
PROGRESS_EVERY = 16
"""Items between progress messages from a worker process."""


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one conversion shares."""

    out: Path
    task: str
    split: str
    samples_per_shard: int
    max_shard_bytes: int | None
    fingerprint: str

    def rel_path(self, dataset: str, k: int) -> str:
        return f"{self.task}/{self.split}/{dataset}-{k:06d}.tar"

    def marker(self, dataset: str, k: int) -> Path:
        name = Path(self.rel_path(dataset, k)).name
        return self.out / self.task / self.split / MARKER_DIR / f"{name}.json"


@dataclass
class ShardResult:
    index: int
    shard: ShardInfo | None
    """None when every item of the shard was skipped (no file)."""
    items: int
    skipped: dict[str, int] = field(default_factory=dict)
    resumed: bool = False


def shuffled_order(n: int, seed: int) -> np.ndarray:
    """The seeded write order of `n` items (the same for any process count)."""
    return np.random.default_rng(seed).permutation(n)


def _shard_from_dict(raw: dict[str, Any]) -> ShardInfo:
    offsets = tuple(raw.get("offsets", ()))
    return ShardInfo(raw["path"], raw["samples"], raw["bytes"], raw["sha256"], offsets)


def finished_shard(conv: Converted, job: ShardJob, k: int, items: int) -> ShardResult | None:
    """Shard k's result if a previous run completed it for the same conversion, else None."""
    marker = job.marker(conv.dataset, k)
    try:
        raw = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if raw.get("fingerprint") != job.fingerprint:
        return None
    shard = None if raw["shard"] is None else _shard_from_dict(raw["shard"])
    if shard is not None:
        path = job.out / shard.path
        if not path.is_file() or path.stat().st_size != shard.bytes:
            return None
        if file_sha256(path) != shard.sha256:
            return None
    return ShardResult(k, shard, items, dict(raw["skipped"]), resumed=True)


def _save_marker(conv: Converted, job: ShardJob, res: ShardResult) -> None:
    marker = job.marker(conv.dataset, res.index)
    marker.parent.mkdir(parents=True, exist_ok=True)
    shard = None
    if res.shard is not None:
        s = res.shard
        shard = {"path": s.path, "samples": s.samples, "bytes": s.bytes, "sha256": s.sha256}
        shard["offsets"] = list(s.offsets)
    data = {"fingerprint": job.fingerprint, "shard": shard, "skipped": res.skipped}
    tmp = marker.with_name(f".{marker.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, marker)


def write_shard(
    conv: Converted,
    order: np.ndarray,
    job: ShardJob,
    k: int,
    progress: Callable[[int], None] | None = None,
) -> ShardResult:
    """Write shard k (items at shuffled positions [k*n, (k+1)*n)) and its marker."""
    n = job.samples_per_shard
    positions = range(k * n, min((k + 1) * n, len(order)))
    skipped: dict[str, int] = {}

    def count(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    def samples() -> Any:
        for done, pos in enumerate(positions, 1):
            if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(positions)):
                progress(PROGRESS_EVERY if done % PROGRESS_EVERY == 0 else done % PROGRESS_EVERY)
            key = f"{job.task}_{job.split}_{pos:08d}"
            try:
                members: Members = conv.load(conv.items[int(order[pos])])
            except ItemError as exc:
                log.debug("convert %s: skipping item %s: %s", job.task, pos, exc)
                count(exc.reason)
                continue
            ann = json.loads(members["json"])
            try:
                check_annotation(
                    conv.type, key, ann, conv.label_space, ann["width"], ann["height"], job.split
                )
            except SampleError as exc:
                log.warning("convert %s: skipping a source sample: %s", job.task, exc)
                count("annotation")
                continue
            yield key, members

    rel = job.rel_path(conv.dataset, k)
    shard = write_shard_file(job.out, rel, samples())
    if shard is None:
        (job.out / rel).unlink(missing_ok=True)  # a stale file of an earlier conversion
    elif job.max_shard_bytes is not None and shard.bytes > job.max_shard_bytes:
        log.warning(
            "convert %s: shard %s has %d bytes, above --shard-mb (%d bytes): lower "
            "--samples-per-shard", job.task, rel, shard.bytes, job.max_shard_bytes,
        )  # fmt: skip
    res = ShardResult(k, shard, len(positions), skipped)
    _save_marker(conv, job, res)
    return res


def _worker(conv: Converted, order: np.ndarray, job: ShardJob, jobs: Any, results: Any) -> None:
    while True:
        k = jobs.get()
        if k is None:
            return
        try:
            res = write_shard(conv, order, job, k, lambda n: results.put(("n", n)))
        except BaseException as exc:  # reported to the parent, which stops the others
            user = isinstance(exc, ValueError)
            results.put(("error", k, str(exc) if user else traceback.format_exc(), user))
            return
        results.put(("done", res))


def run_shards(
    conv: Converted,
    order: np.ndarray,
    job: ShardJob,
    todo: list[int],
    workers: int,
    progress: Callable[[int], None],
) -> list[ShardResult]:
    """Write the shards `todo` with `workers` processes (1: in this process)."""
    if workers <= 1 or len(todo) <= 1:
        return [write_shard(conv, order, job, k, progress) for k in todo]
    ctx = mp.get_context("fork")  # the items and the loader are inherited, not pickled
    jobs, results = ctx.Queue(), ctx.Queue()
    for k in todo:
        jobs.put(k)
    procs = [
        ctx.Process(target=_worker, args=(conv, order, job, jobs, results), daemon=True)
        for _ in range(min(workers, len(todo)))
    ]
    for p in procs:
        jobs.put(None)
        p.start()
    out: list[ShardResult] = []
    try:
        while len(out) < len(todo):
            try:
                msg = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"convert: a worker process died (exit code {dead[0].exitcode})"
                    ) from None
                continue
            if msg[0] == "n":
                progress(msg[1])
            elif msg[0] == "done":
                out.append(msg[1])
            else:
                _, k, text, user = msg
                where = job.rel_path(conv.dataset, k)
                if user:
                    raise ValueError(f"convert: shard {where}: {text}")
                raise RuntimeError(f"convert: shard {where} failed in a worker:\n{text}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return out
