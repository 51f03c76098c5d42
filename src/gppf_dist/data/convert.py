"""`gppf-shards convert`: standard on-disk dataset layouts into shards plus manifest entries.

A layout reader (`convert_layouts`) turns a source into a `Converted`: the task type, its label
space and an iterator of `(members)` dicts (`jpg` + `json`, and `png`/`cls` where the type has
them). This module writes them with `ShardWriter` (closing a shard at `samples_per_shard` samples
or about `max_shard_bytes` bytes, whichever comes first), checks every annotation against the
task type's schema on the way (`schema.check_annotation`), and merges the task's split into
`<out>/manifest.json`, so several conversions can fill one root.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from gppf_dist.data.decode import SampleError
from gppf_dist.data.manifest import (
    MANIFEST_NAME,
    Manifest,
    TaskManifest,
    manifest_from_dict,
    save_manifest,
)
from gppf_dist.data.schema import check_annotation
from gppf_dist.data.writer import ShardWriter

log = logging.getLogger(__name__)

DEFAULT_SAMPLES_PER_SHARD = 10_000
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
JPEG_QUALITY = 95


@dataclass
class Converted:
    """What a layout reader produces; `skipped` counts source items left out, by reason."""

    type: str
    dataset: str
    label_space: dict[str, Any]
    samples: Iterator[dict[str, bytes]]
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def jpeg_member(img: Image.Image | Path) -> tuple[bytes, int, int]:
    """JPEG bytes and (width, height); an RGB JPEG file is copied as is, others re-encoded."""
    if isinstance(img, Path):
        with Image.open(img) as opened:
            if opened.format == "JPEG" and opened.mode == "RGB":
                return img.read_bytes(), opened.width, opened.height
            img = opened.convert("RGB")
    if img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), img.width, img.height


def json_member(ann: dict[str, Any]) -> bytes:
    return json.dumps(ann, separators=(",", ":")).encode("utf-8")


def _merge(out: Path, task: str, split: str, conv: Converted, shards: list) -> Manifest:
    path = out / MANIFEST_NAME
    manifest = Manifest()
    if path.is_file():
        manifest = manifest_from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    old = manifest.tasks.get(task)
    splits = {} if old is None else dict(old.splits)
    if old is not None and (old.type, old.label_space) != (conv.type, conv.label_space):
        others = [s for s in old.splits if s != split]
        if others:
            raise ValueError(
                f"{path}: task {task!r} already has split(s) {others} of type {old.type!r} with "
                f"a different label space; convert into a new task name or root"
            )
    splits[split] = shards
    manifest.tasks[task] = TaskManifest(task, conv.type, conv.dataset, conv.label_space, splits)
    save_manifest(out, manifest)
    return manifest


def write_converted(
    conv: Converted,
    out: Path,
    task: str,
    split: str,
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, int]:
    """Write `conv` as `<out>/<task>/<split>/` shards and merge it into the manifest."""
    out = Path(out)
    count = 0
    with ShardWriter(out, task, split, conv.dataset, samples_per_shard, max_shard_bytes) as w:
        for members in conv.samples:
            key = f"{task}_{split}_{count:08d}"
            ann = json.loads(members["json"])
            try:
                check_annotation(conv.type, key, ann, conv.label_space, ann["width"], ann["height"])
            except SampleError as exc:
                log.warning("convert %s: skipping a source sample: %s", task, exc)
                conv.skip("annotation")
                continue
            w.write(key, members)
            count += 1
            if progress is not None:
                progress(count)
    shards = w.close()
    if not shards:
        raise ValueError(f"convert: no usable samples for task {task!r} (skipped {conv.skipped})")
    return _merge(out, task, split, conv, shards), count
