"""Per-sample byte offsets in one binary file per task and split, opened with `mmap`.

`<root>/index/<task>.<split>.offsets` (the manifest names it, with its byte size): every value
is a little-endian uint64:

    magic "GPPFOFS1" | N (shards) | start[0..N] | offsets...

Shard `i`'s offsets are `offsets[start[i]:start[i+1]]`: its `samples + 1` values (the first tar
header of each sample, then where the last sample ends) or none (a shard not indexed yet). The
file is mapped, not read: the ranks of a node share its pages, and a rank touches the header and
the offsets of the shards it reads, whatever the corpus size. The values of a shard are checked
(increasing, inside the shard) when its offsets are first used.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

INDEX_DIR = "index"
MAGIC = b"GPPFOFS1"
_U64 = np.dtype("<u8")


def index_name(task: str, split: str) -> str:
    """Where a split's offsets live, relative to the shard root."""
    return f"{INDEX_DIR}/{task}.{split}.offsets"


def encode(per_shard: Sequence[Sequence[int]]) -> bytes:
    """The file's bytes for these shards' offsets (an empty sequence: a shard not indexed)."""
    counts = np.array([len(o) for o in per_shard], dtype=np.int64)
    starts = np.zeros(len(per_shard) + 1, dtype=_U64)
    np.cumsum(counts, out=starts[1:])
    values = [np.asarray(o, dtype=_U64) for o in per_shard if len(o)]
    body = np.concatenate(values) if values else np.zeros(0, dtype=_U64)
    head = np.array([len(per_shard)], dtype=_U64)
    return MAGIC + head.tobytes() + starts.tobytes() + body.tobytes()


def write_index(path: Path, per_shard: Sequence[Sequence[int]]) -> int:
    """Write the file atomically (a temporary name beside it, fsynced, renamed); its size."""
    data = encode(per_shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(data)


def read_index(path: Path) -> list[list[int]]:
    """Every shard's offsets in the file (a tool's view; the loaders map it instead)."""
    data = Path(path).read_bytes()
    words = np.frombuffer(data, dtype=_U64)
    if data[:8] != MAGIC or len(words) < 3:
        raise ValueError(f"{path} is not an offsets file")
    n = int(words[1])
    index = SplitIndex(Path(path), n)
    return [index.values(i).tolist() for i in range(n)]


class SplitIndex:
    """One split's offsets file, mapped on first use (and again after unpickling: a decode
    worker that receives it maps the same file instead of receiving the values)."""

    def __init__(self, path: Path, shards: int, size: int | None = None) -> None:
        self.path = Path(path)
        self.shards = shards
        self.size = size
        """The byte size the manifest lists (None: not checked)."""
        self._starts: np.ndarray | None = None
        self._values: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shards": self.shards, "size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["shards"], state["size"])  # type: ignore[misc]

    def _map(self) -> tuple[np.ndarray, np.ndarray]:
        if self._starts is None or self._values is None:
            try:
                with open(self.path, "rb") as f:
                    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
                raise ValueError(
                    f"cannot map sample offsets {self.path}: {exc} (write it again with "
                    "`gppf-shards index --force --root <shard root>`)"
                ) from None
            if self.size is not None and len(buf) != self.size:
                raise ValueError(
                    f"{self.path} has {len(buf)} bytes, the manifest says {self.size} (rewrite "
                    "it with `gppf-shards index --force --root <shard root>`)"
                )
            words = np.frombuffer(buf, dtype=_U64, count=len(buf) // 8)
            n = self.shards
            if buf[:8] != MAGIC or len(words) < n + 3 or int(words[1]) != n:
                raise ValueError(
                    f"{self.path} is not the offsets file of a split of {n} shards (rewrite "
                    "it with `gppf-shards index --force --root <shard root>`)"
                )
            starts = words[2 : n + 3]
            if int(starts[0]) != 0 or int(starts[-1]) != len(words) - n - 3:
                raise ValueError(f"{self.path}: shard starts do not match the file's length")
            self._starts, self._values = starts, words[n + 3 :]
        return self._starts, self._values

    def count(self, shard: int) -> int:
        """How many offsets shard `shard` has (0: not indexed)."""
        starts, _ = self._map()
        return int(starts[shard + 1]) - int(starts[shard])

    def values(self, shard: int) -> np.ndarray:
        """Shard `shard`'s offsets (a view of the mapped file)."""
        starts, values = self._map()
        return values[int(starts[shard]) : int(starts[shard + 1])]


class ShardOffsets(Sequence[int]):
    """One shard's offsets in a `SplitIndex`: a read-only sequence of ints, looked up in the
    mapped file when used (`len` reads the header only)."""

    __slots__ = ("_checked", "_index", "_shard")

    def __init__(self, index: SplitIndex, shard: int) -> None:
        self._index = index
        self._shard = shard
        self._checked: np.ndarray | None = None

    @property
    def index(self) -> SplitIndex:
        return self._index

    @property
    def shard(self) -> int:
        return self._shard

    def __len__(self) -> int:
        return self._index.count(self._shard)

    def _array(self) -> np.ndarray:
        if self._checked is None:
            values = self._index.values(self._shard)
            if len(values) > 1 and not bool(np.all(values[1:] > values[:-1])):
                raise ValueError(
                    f"{self._index.path}: the offsets of shard {self._shard} do not increase "
                    "(rebuild them with `gppf-shards index --force --root <shard root>`)"
                )
            self._checked = values
        return self._checked

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        if isinstance(i, slice):
            return tuple(int(v) for v in self._array()[i])
        return int(self._array()[i])

    def __iter__(self) -> Iterator[int]:
        return (int(v) for v in self._array())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._index.path, self._shard))

    def __repr__(self) -> str:
        return f"ShardOffsets({self._index.path.name}, shard {self._shard}, {len(self)} values)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShardOffsets, (self._index, self._shard))
