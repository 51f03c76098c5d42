"""Writes reproducible webdataset tar shards and reports their `ShardInfo`.

Tars are plain (GNU format, fixed mtime/owner/mode) so the same samples give byte-identical
files. A sample's members are written contiguously as `<key>.<ext>`; keys contain no dots.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from gppf_dist.data.format.manifest import SPLITS, ShardInfo

FIXED_MTIME = 1_700_000_000
"""All members get this mtime so tars are reproducible."""

MEMBER_EXTS = ("jpg", "json", "png", "cls")
"""Member extensions a writer accepts (see shards/README.md)."""

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class _HashingFile:
    """A write-only file wrapper that hashes and counts what tarfile writes."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self.size

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def check_sample(key: str, members: dict[str, bytes]) -> None:
    """ValueError unless `key` is a valid sample key and every member extension is known."""
    if not _KEY_RE.match(key):
        raise ValueError(f"sample key must match [A-Za-z0-9_-]+ (no dots), got {key!r}")
    for ext in members:
        if ext not in MEMBER_EXTS:
            raise ValueError(
                f"sample {key!r}: member extension must be in {MEMBER_EXTS}, got {ext!r}"
            )


def add_sample(tar: tarfile.TarFile, key: str, members: dict[str, bytes]) -> None:
    """Append a sample's members contiguously, with fixed mtime, owner and mode."""
    for ext, data in members.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        info.mtime = FIXED_MTIME
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))


def write_shard_file(
    root: Path, rel_path: str, samples: Iterable[tuple[str, dict[str, bytes]]]
) -> ShardInfo | None:
    """Write one whole shard `<root>/<rel_path>` from `(key, members)` pairs: to a temporary
    name beside it, fsynced, then renamed over it, so the name only ever holds a complete tar.
    None (and no file) when `samples` is empty."""
    path = Path(root) / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    file = _HashingFile(tmp)
    offsets: list[int] = []
    try:
        with tarfile.TarFile(fileobj=file, mode="w", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[arg-type]
            for key, members in samples:
                check_sample(key, members)
                offsets.append(tar.offset)
                add_sample(tar, key, members)
            offsets.append(tar.offset)
        file.sync()
    except BaseException:
        file.close()
        tmp.unlink(missing_ok=True)
        raise
    file.close()
    if len(offsets) == 1:
        tmp.unlink()
        return None
    os.replace(tmp, path)
    return ShardInfo(rel_path, len(offsets) - 1, file.size, file.hexdigest(), tuple(offsets))


class ShardWriter:
    """Writes `<root>/<task>/<split>/<dataset>-NNNNNN.tar`, at most `samples_per_shard` each
    (and, if `max_shard_bytes` is set, about that many bytes each).

    Use as a context manager; `close()` (or leaving the block) returns the `ShardInfo` list.
    """

    def __init__(
        self,
        root: Path,
        task: str,
        split: str,
        dataset: str,
        samples_per_shard: int = 64,
        max_shard_bytes: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        for what, value in (("task", task), ("dataset", dataset)):
            if not _NAME_RE.match(value):
                raise ValueError(f"{what} name must match [A-Za-z0-9_-]+, got {value!r}")
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.root = Path(root)
        self.rel_dir = f"{task}/{split}"
        self.dataset = dataset
        self.samples_per_shard = samples_per_shard
        self.max_shard_bytes = max_shard_bytes
        """A shard is closed once it holds this many bytes (so it ends up about this size)."""
        (self.root / self.rel_dir).mkdir(parents=True, exist_ok=True)
        self.shards: list[ShardInfo] = []
        self._file: _HashingFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._rel_path = ""
        self._count = 0
        self._offsets: list[int] = []
        self._keys: set[str] = set()

    def _open_next(self) -> None:
        self._rel_path = f"{self.rel_dir}/{self.dataset}-{len(self.shards):06d}.tar"
        self._file = _HashingFile(self.root / self._rel_path)
        self._tar = tarfile.TarFile(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)  # type: ignore[arg-type]
        self._count = 0
        self._offsets = []

    def _finish_current(self) -> None:
        if self._tar is None or self._file is None:
            return
        offsets = (*self._offsets, self._tar.offset)  # where the last sample ends
        self._tar.close()
        self._file.close()
        self.shards.append(
            ShardInfo(self._rel_path, self._count, self._file.size, self._file.hexdigest(), offsets)
        )
        self._tar = None
        self._file = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Append one sample; `members` maps extension (e.g. "jpg") to the member's bytes."""
        check_sample(key, members)
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in {self.rel_dir}")
        self._keys.add(key)
        if self._tar is None:
            self._open_next()
        assert self._tar is not None
        self._offsets.append(self._tar.offset)
        add_sample(self._tar, key, members)
        self._count += 1
        full = (
            self.max_shard_bytes is not None
            and self._file is not None
            and (self._file.size >= self.max_shard_bytes)
        )
        if self._count >= self.samples_per_shard or full:
            self._finish_current()

    def close(self) -> list[ShardInfo]:
        self._finish_current()
        return list(self.shards)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
