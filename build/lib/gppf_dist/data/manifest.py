"""The shard manifest: what tasks a shard root holds, their label spaces and their shard files.

`<root>/manifest.json` is the single source of truth the loaders read; the schema is documented
in shards/README.md. Loading does only cheap checks (structure, file existence, byte sizes);
sha256 digests are checked by `gppf-shards verify`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")

LABEL_SPACE_KEYS: dict[str, tuple[str, ...]] = {
    "classification": ("classes",),
    "detection": ("classes",),
    "segmentation": ("classes",),
    "pose": ("keypoints", "skeleton"),
    "attributes": ("attributes",),
    "reid": ("num_identities",),
    "face": ("num_identities",),
}
"""Label-space keys the model side reads, per known task type (other types are not checked)."""


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardInfo:
    """One tar file of a split; `path` is relative to the shard root, POSIX separators."""

    path: str
    samples: int
    bytes: int
    sha256: str
    offsets: tuple[int, ...] = ()
    """Byte offset of each sample's first tar header, then where the last sample ends
    (`samples` + 1 values), so a reader can seek to any sample; () when not indexed (shards by
    other tools: `gppf-shards index` adds them)."""

    @property
    def has_offsets(self) -> bool:
        """The manifest records where each sample starts (parts can be read by byte range)."""
        return len(self.offsets) == self.samples + 1

    def segment(self, start: int, stop: int) -> tuple[int, int]:
        """The byte range [a, b) of samples [start, stop); needs `offsets`."""
        if not self.has_offsets:
            raise ValueError(
                f"shard {self.path!r} has no sample offsets in the manifest: run "
                "`gppf-shards index --root <shard root>` to read part of it"
            )
        return self.offsets[start], self.offsets[stop]


@dataclass
class TaskManifest:
    """One task: its type, source dataset, label space and shards per split."""

    name: str
    type: str
    dataset: str
    label_space: dict[str, Any]
    splits: dict[str, list[ShardInfo]] = field(default_factory=dict)

    def shards(self, split: str) -> list[ShardInfo]:
        """The shards of `split`; ValueError naming the task if the split is absent."""
        if split not in self.splits:
            raise ValueError(
                f"task {self.name!r} has no split {split!r} (has {sorted(self.splits)})"
            )
        return self.splits[split]

    def num_samples(self, split: str) -> int:
        return sum(s.samples for s in self.shards(split))


@dataclass
class Manifest:
    """All tasks under one shard root."""

    schema_version: int = SCHEMA_VERSION
    tasks: dict[str, TaskManifest] = field(default_factory=dict)

    def label_spaces(self) -> dict[str, dict[str, Any]]:
        """Each task's label space (class names, keypoints, attributes, identities)."""
        return {name: t.label_space for name, t in self.tasks.items()}

    def task(self, name: str) -> TaskManifest:
        if name not in self.tasks:
            raise ValueError(f"manifest has no task {name!r} (has {sorted(self.tasks)})")
        return self.tasks[name]


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON form written to manifest.json."""
    tasks: dict[str, Any] = {}
    for name, tm in manifest.tasks.items():
        tasks[name] = {
            "type": tm.type,
            "dataset": tm.dataset,
            "label_space": tm.label_space,
            "splits": {
                split: [_shard_to_dict(s) for s in shards] for split, shards in tm.splits.items()
            },
        }
    return {"schema_version": manifest.schema_version, "tasks": tasks}


def _shard_to_dict(s: ShardInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"path": s.path, "samples": s.samples, "bytes": s.bytes}
    out["sha256"] = s.sha256
    if s.offsets:
        out["offsets"] = list(s.offsets)
    return out


def _expect(cond: bool, where: str, what: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"{where}: {what}, got {value!r}")


def _check_relative(path: str, where: str) -> None:
    p = PurePosixPath(path)
    _expect(
        bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path,
        where,
        "shard path must be a relative POSIX path without '..'",
        path,
    )


def _parse_shard(raw: Any, where: str) -> ShardInfo:
    _expect(isinstance(raw, dict), where, "shard entry must be an object", raw)
    for key, typ in (("path", str), ("samples", int), ("bytes", int), ("sha256", str)):
        val = raw.get(key)
        ok = isinstance(val, typ) and not isinstance(val, bool)
        _expect(ok, f"{where}.{key}", f"must be {typ.__name__}", val)
    _check_relative(raw["path"], f"{where}.path")
    _expect(raw["samples"] >= 0, f"{where}.samples", "must be >= 0", raw["samples"])
    _expect(raw["bytes"] >= 0, f"{where}.bytes", "must be >= 0", raw["bytes"])
    offsets = raw.get("offsets", [])
    ok = (
        isinstance(offsets, list)
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        and all(a < b for a, b in zip(offsets, offsets[1:], strict=False))
    )
    _expect(ok, f"{where}.offsets", "must be a list of increasing byte offsets", offsets)
    if offsets and (
        len(offsets) != raw["samples"] + 1 or offsets[0] < 0 or offsets[-1] > raw["bytes"]
    ):
        # Stale (the shard was rewritten after it was indexed): unusable, but only an index.
        log.warning(
            "%s.offsets: %d offsets for %d samples of %d bytes do not fit the shard; ignored "
            "(run `gppf-shards index` to rebuild them)",
            where, len(offsets), raw["samples"], raw["bytes"],
        )  # fmt: skip
        offsets = []
    return ShardInfo(raw["path"], raw["samples"], raw["bytes"], raw["sha256"], tuple(offsets))


def _parse_task(name: str, raw: Any, where: str) -> TaskManifest:
    _expect(isinstance(raw, dict), where, "task entry must be an object", raw)
    for key in ("type", "dataset"):
        _expect(isinstance(raw.get(key), str), f"{where}.{key}", "must be a string", raw.get(key))
    label_space = raw.get("label_space")
    _expect(isinstance(label_space, dict), f"{where}.label_space", "must be an object", label_space)
    for key in LABEL_SPACE_KEYS.get(raw["type"], ()):
        _expect(
            key in label_space,
            f"{where}.label_space",
            f"type {raw['type']!r} needs key {key!r}",
            sorted(label_space),
        )
    splits_raw = raw.get("splits")
    _expect(isinstance(splits_raw, dict), f"{where}.splits", "must be an object", splits_raw)
    splits: dict[str, list[ShardInfo]] = {}
    for split, shards in splits_raw.items():
        _expect(split in SPLITS, f"{where}.splits", f"split must be one of {SPLITS}", split)
        _expect(isinstance(shards, list), f"{where}.splits.{split}", "must be a list", shards)
        splits[split] = [
            _parse_shard(s, f"{where}.splits.{split}[{i}]") for i, s in enumerate(shards)
        ]
    return TaskManifest(name, raw["type"], raw["dataset"], label_space, splits)


def manifest_from_dict(raw: Any, where: str = MANIFEST_NAME) -> Manifest:
    """Parse and validate the JSON form; ValueError names `where` and the offending key."""
    _expect(isinstance(raw, dict), where, "manifest must be a JSON object", type(raw).__name__)
    version = raw.get("schema_version")
    _expect(
        version == SCHEMA_VERSION, f"{where}: schema_version", f"must be {SCHEMA_VERSION}", version
    )
    tasks_raw = raw.get("tasks")
    _expect(isinstance(tasks_raw, dict), f"{where}: tasks", "must be an object", tasks_raw)
    tasks = {name: _parse_task(name, t, f"{where}: tasks.{name}") for name, t in tasks_raw.items()}
    return Manifest(schema_version=version, tasks=tasks)


def load_manifest(root: Path) -> Manifest:
    """Read `<root>/manifest.json` and check every listed shard exists with the listed size."""
    path = Path(root) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"manifest {path} is not valid JSON: {exc}") from exc
    manifest = manifest_from_dict(raw, where=str(path))
    for name, tm in manifest.tasks.items():
        for split, shards in tm.splits.items():
            for shard in shards:
                file = Path(root) / shard.path
                try:
                    size = file.stat().st_size
                except OSError as exc:
                    raise ValueError(
                        f"manifest {path}: task {name!r} split {split!r} lists shard {file} "
                        f"which does not exist"
                    ) from exc
                if size != shard.bytes:
                    raise ValueError(
                        f"manifest {path}: shard {file} has {size} bytes, manifest says "
                        f"{shard.bytes}"
                    )
    return manifest


def save_manifest(root: Path, manifest: Manifest) -> Path:
    """Write `<root>/manifest.json` atomically (temporary file + os.replace)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST_NAME
    tmp = root / f".{MANIFEST_NAME}.tmp.{os.getpid()}"
    data = json.dumps(manifest_to_dict(manifest), indent=2, sort_keys=False) + "\n"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
