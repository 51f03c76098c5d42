"""The shard manifest: what tasks a shard root holds, their label spaces and their shard files.

`<root>/manifest.json` is the single source of truth the loaders read; the schema is documented
in shards/README.md. It holds per-shard facts only: per-sample byte offsets live in one binary
file per task and split (`offsets`), mapped when used. Loading does only cheap checks
(structure; with `check_files`, that each shard exists with its byte size); sha256 digests are
checked by `gppf-shards verify`. A root in format 1 (offsets inside manifest.json) is refused
with the command that upgrades it (`upgrade`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gppf_dist.data.format.offsets import ShardOffsets, SplitIndex, index_name, write_index
from gppf_dist.tasks.registry import TASK_TYPES

SCHEMA_VERSION = 2
FORMAT_1 = 1
"""The previous format: offsets inside manifest.json (`gppf-shards upgrade` converts it)."""
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardInfo:
    """One tar file of a split; `path` is relative to the shard root, POSIX separators."""

    path: str
    samples: int
    bytes: int
    sha256: str
    offsets: Sequence[int] = ()
    """Byte offset of each sample's first tar header, then where the last sample ends
    (`samples` + 1 values), so a reader can seek to any sample; () when not indexed (shards by
    other tools: `gppf-shards index` adds them). Loaded from a root, a view of the split's mapped
    offsets file (`offsets.ShardOffsets`); written by a tool, the values."""

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
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        if b > self.bytes:
            raise ValueError(
                f"shard {self.path!r}: its sample offsets reach byte {b} of a {self.bytes}-byte "
                "file (stale: rebuild them with `gppf-shards index --force --root <shard root>`)"
            )
        return a, b


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


def manifest_to_dict(
    manifest: Manifest, index_files: dict[tuple[str, str], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The JSON form written to manifest.json; `index_files`: (task, split) -> the entry of
    its offsets file (`{"path", "bytes"}`), as `save_manifest` wrote them."""
    index_files = index_files or {}
    tasks: dict[str, Any] = {}
    for name, tm in manifest.tasks.items():
        entry: dict[str, Any] = {
            "type": tm.type,
            "dataset": tm.dataset,
            "label_space": tm.label_space,
            "splits": {
                split: [_shard_to_dict(s) for s in shards] for split, shards in tm.splits.items()
            },
        }
        files = {
            split: index_files[name, split] for split in tm.splits if (name, split) in index_files
        }
        if files:
            entry["offsets"] = files
        tasks[name] = entry
    return {"schema_version": SCHEMA_VERSION, "tasks": tasks}


def _shard_to_dict(s: ShardInfo) -> dict[str, Any]:
    return {"path": s.path, "samples": s.samples, "bytes": s.bytes, "sha256": s.sha256}


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


def _parse_shard(raw: Any, where: str, inline_offsets: bool) -> ShardInfo:
    _expect(isinstance(raw, dict), where, "shard entry must be an object", raw)
    for key, typ in (("path", str), ("samples", int), ("bytes", int), ("sha256", str)):
        val = raw.get(key)
        ok = isinstance(val, typ) and not isinstance(val, bool)
        _expect(ok, f"{where}.{key}", f"must be {typ.__name__}", val)
    _check_relative(raw["path"], f"{where}.path")
    _expect(raw["samples"] >= 0, f"{where}.samples", "must be >= 0", raw["samples"])
    _expect(raw["bytes"] >= 0, f"{where}.bytes", "must be >= 0", raw["bytes"])
    if not inline_offsets:
        _expect("offsets" not in raw, f"{where}.offsets", "format 2 keeps offsets out of "
                "manifest.json (in the split's offsets file)", "a list")  # fmt: skip
        return ShardInfo(raw["path"], raw["samples"], raw["bytes"], raw["sha256"])
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


def _parse_task(
    name: str, raw: Any, where: str, root: Path | None, inline_offsets: bool
) -> TaskManifest:
    _expect(isinstance(raw, dict), where, "task entry must be an object", raw)
    for key in ("type", "dataset"):
        _expect(isinstance(raw.get(key), str), f"{where}.{key}", "must be a string", raw.get(key))
    label_space = raw.get("label_space")
    _expect(isinstance(label_space, dict), f"{where}.label_space", "must be an object", label_space)
    known = TASK_TYPES.get(raw["type"])  # a type not registered here is not checked
    for key in known.label_space_keys if known is not None else ():
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
            _parse_shard(s, f"{where}.splits.{split}[{i}]", inline_offsets)
            for i, s in enumerate(shards)
        ]
    files = raw.get("offsets", {})
    _expect(isinstance(files, dict), f"{where}.offsets", "must be an object", files)
    for split, file in files.items():
        at = f"{where}.offsets.{split}"
        _expect(split in splits, at, "names a split the task does not have", split)
        _expect(isinstance(file, dict) and isinstance(file.get("path"), str), at,
                "must be an object with a string 'path'", file)  # fmt: skip
        _check_relative(file["path"], f"{at}.path")
        if root is not None:
            splits[split] = _with_offsets(splits[split], SplitIndex(root / file["path"],
                                          len(splits[split]), file.get("bytes")), at)  # fmt: skip
    return TaskManifest(name, raw["type"], raw["dataset"], label_space, splits)


def _with_offsets(shards: list[ShardInfo], index: SplitIndex, where: str) -> list[ShardInfo]:
    """The shards with their offsets in `index`; a shard whose count does not fit its samples
    (rewritten after it was indexed) keeps none, with a warning: it is only an index. So does
    every shard of a split whose file is missing or is not an offsets file (and `gppf-shards
    index` can then write it again)."""
    if not shards:
        return shards
    try:
        index.count(0)  # maps the file and checks its header
    except ValueError as err:
        log.warning("%s: %s; the split's shards are read whole", where, err)
        return shards
    out = []
    for i, shard in enumerate(shards):
        count = index.count(i)
        if count and count != shard.samples + 1:
            log.warning(
                "%s: shard %d (%s) has %d offsets for %d samples in %s; ignored (run "
                "`gppf-shards index --force` to rebuild them)",
                where, i, shard.path, count, shard.samples, index.path,
            )  # fmt: skip
        elif count:
            shard = ShardInfo(shard.path, shard.samples, shard.bytes, shard.sha256,
                              ShardOffsets(index, i))  # fmt: skip
        out.append(shard)
    return out


def manifest_from_dict(
    raw: Any,
    where: str = MANIFEST_NAME,
    root: Path | None = None,
    tasks: Iterable[str] | None = None,
    format_1: bool = False,
) -> Manifest:
    """Parse and validate the JSON form; ValueError names `where` and the offending key.
    `root`: where the offsets files are (without it, shards carry no offsets); `tasks`: parse
    only these (the others are left out); `format_1`: read the previous format (for
    `upgrade`), whose offsets are inside the JSON."""
    _expect(isinstance(raw, dict), where, "manifest must be a JSON object", type(raw).__name__)
    version = raw.get("schema_version")
    wanted = FORMAT_1 if format_1 else SCHEMA_VERSION
    if version == FORMAT_1 and not format_1:
        raise ValueError(
            f"{where}: schema_version 1, the format with sample offsets inside manifest.json, "
            f"which this version reads no more: run `gppf-shards upgrade "
            f"{root if root is not None else '<shard root>'}` once to convert it in place"
        )
    _expect(version == wanted, f"{where}: schema_version", f"must be {wanted}", version)
    tasks_raw = raw.get("tasks")
    _expect(isinstance(tasks_raw, dict), f"{where}: tasks", "must be an object", tasks_raw)
    keep = None if tasks is None else set(tasks)
    parsed = {
        name: _parse_task(name, t, f"{where}: tasks.{name}", root, format_1)
        for name, t in tasks_raw.items()
        if keep is None or name in keep
    }
    return Manifest(schema_version=SCHEMA_VERSION, tasks=parsed)


def read_manifest_json(root: Path) -> Any:
    """The JSON of `<root>/manifest.json`; ValueError naming the file if it cannot be read."""
    path = Path(root) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"manifest {path} is not valid JSON: {exc}") from exc


def load_manifest(
    root: Path, tasks: Iterable[str] | None = None, check_files: bool = True
) -> Manifest:
    """Read `<root>/manifest.json` (only `tasks`, when given) and, with `check_files`, check
    every listed shard exists with the listed size (one `stat` a shard: a job does it once,
    not every rank; see `preflight/validate.py`)."""
    root = Path(root)
    path = root / MANIFEST_NAME
    manifest = manifest_from_dict(read_manifest_json(root), str(path), root, tasks)
    if check_files:
        check_shard_files(root, manifest)
    return manifest


def check_shard_files(root: Path, manifest: Manifest) -> None:
    """Every shard of `manifest` exists under `root` with its listed byte size."""
    path = Path(root) / MANIFEST_NAME
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


def _unchanged(shards: list[ShardInfo], file: Path) -> bool:
    """The shards' offsets are, in order, the whole offsets file `file` already holds."""
    views = [s.offsets for s in shards]
    return all(
        isinstance(v, ShardOffsets) and v.index.path == file and v.shard == i and v.index.shards
        == len(shards) for i, v in enumerate(views)
    )  # fmt: skip


def save_manifest(root: Path, manifest: Manifest) -> Path:
    """Write each split's offsets file, then `<root>/manifest.json`, each atomically (a
    temporary file + os.replace): a reader sees the old root or the new one. A split whose
    offsets are already its file, unchanged, is not rewritten."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[tuple[str, str], dict[str, Any]] = {}
    for name, tm in manifest.tasks.items():
        for split, shards in tm.splits.items():
            if not any(len(s.offsets) for s in shards):
                continue
            rel = index_name(name, split)
            file = root / rel
            size = file.stat().st_size if _unchanged(shards, file) else write_index(
                file, [s.offsets for s in shards])  # fmt: skip
            files[name, split] = {"path": rel, "bytes": size}
    path = root / MANIFEST_NAME
    tmp = root / f".{MANIFEST_NAME}.tmp.{os.getpid()}"
    data = json.dumps(manifest_to_dict(manifest, files), indent=2, sort_keys=False) + "\n"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
