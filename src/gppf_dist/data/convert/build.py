"""`gppf-shards build`: every dataset of a corpus spec found under a source root, one shard root.

A corpus is a dozen public datasets that are downloaded separately, some never: the build takes
what is there and says what is not. For each dataset of the spec, in order: a missing
`<src-root>/<folder>` (or a split's source inside it) is recorded with the path looked for; each
split found is converted by `convert.write_converted` (shuffled, resumable: a rerun keeps the
shards an earlier run finished, so an interrupted build costs only its unfinished shards); a
`ValueError` while reading or converting one split (a damaged annotation file, a label space
that disagrees with the root's manifest) is recorded for that split and the build goes on, so
one bad download never loses the others' hours of conversion.

The result is one `BuildRow` per dataset split (or per missing dataset) and an exit code:
0 when something was converted and nothing failed, 1 when a split failed, 2 when nothing was
found. Printing is the caller's: `log` receives the progress lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gppf_dist.data.convert.corpus_spec import CorpusSpec, SpecDataset, SpecSplit
from gppf_dist.data.convert.readers import LAYOUTS
from gppf_dist.data.convert.run import (
    DEFAULT_SAMPLES_PER_SHARD,
    DEFAULT_SEED,
    DEFAULT_SHARD_BYTES,
    write_converted,
)
from gppf_dist.data.format.manifest import MANIFEST_NAME

CONVERTED, MISSING, FAILED = "converted", "missing", "failed"
WHOLE_DATASET = "-"
"""The split column of a row standing for a whole dataset (its folder is missing)."""


@dataclass(frozen=True)
class BuildRow:
    """The outcome of one dataset split (or of a whole dataset whose folder is missing)."""

    dataset: str
    task: str
    split: str
    status: str
    """CONVERTED, MISSING or FAILED."""
    detail: str = ""
    """MISSING: the path looked for; FAILED: the error message."""
    samples: int = 0
    shards: int = 0
    kept: int = 0
    """Shards an earlier run had finished, kept as they were."""
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def status_text(self) -> str:
        return self.status if self.status == CONVERTED else f"{self.status}: {self.detail}"


@dataclass
class BuildReport:
    """All rows of a build, in the spec's order."""

    out: Path
    rows: list[BuildRow] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    def exit_code(self) -> int:
        """1 if any split failed, else 0 if any converted, else 2 (nothing found)."""
        if self.count(FAILED):
            return 1
        return 0 if self.count(CONVERTED) else 2


def select_datasets(spec: CorpusSpec, only: Sequence[str] | None) -> list[SpecDataset]:
    """The spec's datasets in order; with `only`, those named (by dataset name or by spec task
    name, which picks all of its datasets). ValueError naming an unknown name."""
    datasets = spec.datasets()
    if not only:
        return datasets
    known = {d.name for d in datasets} | set(spec.tasks)
    unknown = sorted(set(only) - known)
    if unknown:
        raise ValueError(
            f"build: --only {unknown} names no dataset or task of spec {spec.name!r} "
            f"(datasets: {[d.name for d in datasets]}; tasks: {list(spec.tasks)})"
        )
    wanted = set(only)
    return [d for t in spec.tasks.values() for d in t.datasets if {d.name, t.name} & wanted]


def _skipped_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "none"


def format_done(prefix: str, row: BuildRow) -> str:
    """The progress line of a finished (or failed, or missing) dataset split."""
    head = f"{prefix} {row.dataset} {row.split} -> {row.task}"
    if row.status == MISSING:
        return f"{head}: missing {row.detail}, skipped"
    if row.status == FAILED:
        return f"{head}: FAILED after {row.seconds:.1f}s: {row.detail}"
    return (
        f"{head}: {row.samples} samples in {row.shards} shards ({row.kept} kept from an earlier "
        f"run), skipped {_skipped_text(row.skipped)}, {row.seconds:.1f}s"
    )


def _convert_split(
    data: SpecDataset,
    split: str,
    spec_split: SpecSplit,
    folder: Path,
    out: Path,
    options: dict[str, Any],
    log: Callable[[str], None],
    prefix: str,
) -> BuildRow:
    src = folder / spec_split.src
    if not src.exists():
        row = BuildRow(data.name, data.task, split, MISSING, str(src))
        log(format_done(prefix, row))
        return row
    images = folder / spec_split.images if spec_split.images else None
    expect = f", ~{data.samples} samples" if split == "train" and data.samples else ""
    log(f"{prefix} {data.name} {split} -> {data.task}: converting {src} ({data.layout}{expect})")
    start = time.perf_counter()
    try:
        conv = LAYOUTS[data.layout][0](src, images, split)
        manifest, results = write_converted(conv, out, data.task, split, **options)
    except ValueError as exc:
        seconds = time.perf_counter() - start
        message = " ".join(str(exc).split())  # one line: a table cell (parsers add lines)
        row = BuildRow(data.name, data.task, split, FAILED, message, seconds=seconds)
        log(format_done(prefix, row))
        return row
    shards = manifest.tasks[data.task].splits[split]
    row = BuildRow(
        data.name, data.task, split, CONVERTED,
        samples=sum(s.samples for s in shards),
        shards=len(shards),
        kept=sum(r.resumed for r in results),
        skipped=dict(sorted(conv.skipped.items())),
        seconds=time.perf_counter() - start,
    )  # fmt: skip
    log(format_done(prefix, row))
    return row


def build_corpus(
    spec: CorpusSpec,
    src_root: Path,
    out: Path,
    only: Sequence[str] | None = None,
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    seed: int = DEFAULT_SEED,
    workers: int = 1,
    max_shard_bytes: int | None = DEFAULT_SHARD_BYTES,
    log: Callable[[str], None] | None = None,
) -> BuildReport:
    """Convert every dataset of `spec` (or of `only`, see `select_datasets`) found under
    `src_root` into the shard root `out`; `log` gets one line as each split starts and ends."""
    src_root, out = Path(src_root), Path(out)
    if not src_root.is_dir():
        raise ValueError(f"build: --src-root {src_root} is not a folder")
    if samples_per_shard < 1 or workers < 1:
        raise ValueError(
            f"build: --samples-per-shard ({samples_per_shard}) and --workers ({workers}) "
            "must be >= 1"
        )
    chosen = select_datasets(spec, only)
    tell = log or (lambda line: None)
    options: dict[str, Any] = {
        "samples_per_shard": samples_per_shard,
        "max_shard_bytes": max_shard_bytes,
        "seed": seed,
        "workers": workers,
    }
    report = BuildReport(out)
    for k, data in enumerate(chosen, 1):
        prefix = f"[{k}/{len(chosen)}]"
        folder = src_root / data.folder
        if not folder.is_dir():
            row = BuildRow(data.name, data.task, WHOLE_DATASET, MISSING, str(folder))
            tell(format_done(prefix, row))
            report.rows.append(row)
            continue
        for split, spec_split in data.splits.items():
            row = _convert_split(data, split, spec_split, folder, out, options, tell, prefix)
            report.rows.append(row)
    return report


def format_build_table(report: BuildReport) -> str:
    """The closing table: one line per row, then the counts and the manifest written."""
    head = ("dataset", "task", "split", "samples", "shards", "skipped", "status")
    lines = [head] + [
        (r.dataset, r.task, r.split, str(r.samples), str(r.shards), str(sum(r.skipped.values())),
         r.status_text())
        for r in report.rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    numeric = {3, 4, 5}
    text = []
    for line in lines:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(
            zip(line[:-1], widths, strict=True))]  # fmt: skip
        text.append("  ".join([*cells, line[-1]]))
    counts = ", ".join(f"{report.count(s)} {s}" for s in (CONVERTED, MISSING, FAILED))
    written = f"; manifest: {report.out / MANIFEST_NAME}" if report.count(CONVERTED) else ""
    text.append(counts + written)
    return "\n".join(text)
