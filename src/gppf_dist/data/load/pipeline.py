"""Per-sample steps shared by the train and eval loaders: read a shard, decode, prepare, collate.

Everything that can go wrong with one sample ends here as a counted skip reason, so the loaders
above only decide *which* sample comes next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gppf_dist.data.decode.jpeg import FULL, allowed_eighths, default_decoder
from gppf_dist.data.decode.sample import (
    RawSample,
    Reduction,
    SampleError,
    SkipCounter,
    decode_sample,
    read_shard,
)
from gppf_dist.data.format.manifest import ShardInfo
from gppf_dist.data.load.streams import sample_rng
from gppf_dist.tasks.base import Batch, TaskSpec, TaskType

PREPARE_ERRORS = (ValueError, KeyError, IndexError, TypeError)
"""What a task type's `prepare` may raise for a bad annotation (the contract says ValueError;
the others are what schema mistakes produce in practice)."""


@dataclass
class SampleContext:
    """What every stream reader of one loader shares."""

    root: Path
    task: str
    spec: TaskSpec
    task_type: TaskType
    seed: int
    train: bool
    needs_mask: bool
    skips: SkipCounter
    decoder: str = field(default_factory=default_decoder)
    """`turbo`, `pillow` or `gpu` (see `data.jpeg`); every reader of a run must use the same."""


def reduction_for(task_type: TaskType, spec: TaskSpec) -> Reduction | None:
    """How far the task's JPEGs may be reduced while decoding: as far as the window its
    `source_window` names keeps at least `spec.input_size` pixels across (None, i.e. full
    size, for a task type without `source_window`, or where the annotation cannot tell)."""
    window_of = getattr(task_type, "source_window", None)
    if window_of is None:
        return None

    def reduce(ann: dict[str, Any], width: int, height: int) -> int:
        try:
            window = window_of(ann, width, height, spec)
        except PREPARE_ERRORS:
            return FULL  # `prepare` will say what is wrong with the annotation
        return allowed_eighths(window, spec.input_size)

    return reduce


def load_shard_samples(
    ctx: SampleContext, shard: ShardInfo, start: int = 0, stop: int | None = None
) -> list[RawSample | None]:
    """Samples [start, stop) of a shard (default: all), aligned to the manifest's count; None
    where the tar lacks one. A part is read from its byte range (the manifest's offsets)."""
    stop = shard.samples if stop is None else stop
    whole = (start, stop) == (0, shard.samples)
    where = shard.path if whole else f"{shard.path}[samples {start}:{stop}]"
    contents = read_shard(ctx.root / shard.path, None if whole else shard.segment(start, stop))
    count = stop - start
    if contents.error is not None:
        ctx.skips.record(contents.error.reason, str(contents.error))
    elif len(contents.samples) < count:
        ctx.skips.record(
            "truncated_shard",
            f"{where}: {len(contents.samples)} samples, manifest says {count}",
        )
    samples: list[RawSample | None] = list(contents.samples[:count])
    if len(contents.samples) > count:
        ctx.skips.record(
            "manifest_mismatch",
            f"{where}: {len(contents.samples)} samples, manifest says {count}; "
            f"extra samples ignored",
            n=len(contents.samples) - count,
        )
    samples.extend([None] * (count - len(samples)))
    return samples


def prepare_sample(
    ctx: SampleContext, raw: RawSample | None, rng_key: tuple[int, int, int], where: str
) -> tuple[str, torch.Tensor, Any] | None:
    """Decode + prepare one sample; None (counted) if it must be skipped."""
    if raw is None:
        ctx.skips.record("truncated", f"{where}: sample missing from a truncated shard")
        return None
    try:
        sample = decode_sample(
            raw,
            needs_mask=ctx.needs_mask,
            decoder=ctx.decoder,
            reduce=reduction_for(ctx.task_type, ctx.spec) if ctx.decoder == "turbo" else None,
        )
    except SampleError as exc:
        ctx.skips.record(exc.reason, f"{where}: {exc}")
        return None
    stream, epoch, index = rng_key
    rng = sample_rng(ctx.seed, ctx.task, stream, epoch, index)
    try:
        image, target = ctx.task_type.prepare(sample, ctx.spec, ctx.train, rng)
    except PREPARE_ERRORS as exc:
        ctx.skips.record("annotation", f"{where}: sample {raw.key!r}: {exc!r}")
        return None
    if sample.dropped:
        ctx.skips.drop(sample.dropped)
    return raw.key, image, target


def collate(
    task: str, task_type: TaskType, items: list[tuple[str, torch.Tensor, Any]], groups: list[int]
) -> Batch:
    """Stack prepared samples into a `Batch`."""
    return Batch(
        task=task,
        images=torch.stack([img for _, img, _ in items]),
        targets=task_type.collate([t for _, _, t in items]),
        groups=torch.tensor(groups, dtype=torch.int64),
        keys=[k for k, _, _ in items],
    )
