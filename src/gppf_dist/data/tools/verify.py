"""`gppf-shards verify`: check every shard of a root against its manifest, sample by sample.

Per shard: the file exists, its byte size and sha256 match the manifest, the tar reads to its
end, it holds exactly the listed number of samples, and every sample decodes (image, mask, JSON)
and its annotation matches its task type's schema (`schema.check_annotation`). Problems are
collected as `Problem(shard, key, reason)`, never raised, so one run reports them all.

For task types with one class per sample (`TaskType.class_label`: classification), a shard whose
label mix is far from its split's (`label_mix`) is a warning, not a problem: the data is valid,
but a stream reading it would see few classes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gppf_dist.data.decode.sample import SampleError, decode_sample, read_shard
from gppf_dist.data.format.index import shard_offsets
from gppf_dist.data.format.label_mix import MixWarning, mix_warnings
from gppf_dist.data.format.manifest import MANIFEST_NAME, Manifest, ShardInfo, manifest_from_dict
from gppf_dist.data.format.schema import check_annotation, check_mask
from gppf_dist.tasks.registry import get_task_type


@dataclass(frozen=True)
class Problem:
    shard: str
    key: str
    """The sample key, or "-" for a problem of the whole shard."""
    reason: str


@dataclass
class SplitReport:
    task: str
    type: str
    split: str
    shards: int = 0
    samples: int = 0
    good: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[MixWarning] = field(default_factory=list)
    labels: dict[str, Counter] = field(default_factory=dict)
    """Class label counts of the good samples, per shard path (types with `class_label`)."""


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _verify_shard(
    root: Path, shard: ShardInfo, tm_type: str, label_space: dict, rep: SplitReport
) -> None:
    path = root / shard.path

    def problem(key: str, reason: str) -> None:
        rep.problems.append(Problem(shard.path, key, reason))

    if not path.is_file():
        problem("-", f"file {path} does not exist")
        return
    size = path.stat().st_size
    if size != shard.bytes:
        problem("-", f"{size} bytes, manifest says {shard.bytes}")
    digest = file_sha256(path)
    if digest != shard.sha256:
        problem("-", f"sha256 {digest[:16]}..., manifest says {shard.sha256[:16]}...")
    contents = read_shard(path)
    if contents.error is not None:
        problem("-", f"{contents.error.reason}: {contents.error}")
    if len(contents.samples) != shard.samples:
        problem("-", f"{len(contents.samples)} samples, manifest says {shard.samples}")
    elif shard.offsets and contents.error is None and shard_offsets(path) != shard.offsets:
        problem("-", "sample offsets do not match the tar: rebuild them with "
                f"`gppf-shards index --root {root} --force`")  # fmt: skip
    task_type = get_task_type(tm_type)
    class_label = getattr(task_type, "class_label", None)
    for raw in contents.samples:
        try:
            sample = decode_sample(raw, needs_mask=task_type.needs_mask)
            height, width = sample.image.shape[:2]
            check_annotation(tm_type, raw.key, sample.ann, label_space, width, height, rep.split)
            check_mask(tm_type, raw.key, sample.mask, label_space)
        except SampleError as exc:
            problem(raw.key, f"{exc.reason}: {exc}")
            continue
        rep.good += 1
        if class_label is not None:
            rep.labels.setdefault(shard.path, Counter())[class_label(sample.ann)] += 1


def verify_root(root: Path, manifest: Manifest | None = None) -> list[SplitReport]:
    """Check every shard of every task and split; one report per (task, split)."""
    root = Path(root)
    if manifest is None:
        path = root / MANIFEST_NAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read manifest {path}: {exc}") from exc
        manifest = manifest_from_dict(raw, where=str(path), root=root)
    reports = []
    for name, tm in manifest.tasks.items():
        for split, shards in tm.splits.items():
            rep = SplitReport(name, tm.type, split, shards=len(shards))
            rep.samples = sum(s.samples for s in shards)
            for shard in shards:
                _verify_shard(root, shard, tm.type, tm.label_space, rep)
            rep.warnings = mix_warnings(rep.labels)
            reports.append(rep)
    return reports


def format_table(reports: list[SplitReport]) -> str:
    """The per-task table and the verdict line."""
    lines = [f"{'task':12s} {'type':15s} {'split':6s} {'shards':>6s} {'samples':>8s} {'bad':>6s}"]
    for r in reports:
        bad = len(r.problems)
        lines.append(
            f"{r.task:12s} {r.type:15s} {r.split:6s} {r.shards:6d} {r.samples:8d} {bad:6d}"
        )
    total = sum(len(r.problems) for r in reports)
    lines.append(f"{'FAILED' if total else 'OK'}: {total} problem(s)")
    mixed = sum(len(r.warnings) for r in reports)
    if mixed:
        lines.append(f"{mixed} shard(s) with a label mix far from their task's (WARNING lines)")
    return "\n".join(lines)


def format_problems(reports: list[SplitReport]) -> str:
    """One line per problem: shard, key ("-" for the whole shard) and reason; then one per
    label-mix warning."""
    lines = [f"PROBLEM {p.shard} key={p.key}: {p.reason}" for r in reports for p in r.problems]
    return "\n".join(lines + [str(w) for r in reports for w in r.warnings])
