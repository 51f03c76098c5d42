"""Read an offline W&B run file (`<run.dir>/wandb/offline-run-*/run-<id>.wandb`) without wandb.

Layout, as written by wandb-core (checked against wandb 0.31):

* a 7-byte header: b":W&B", the magic 0xBEE1 as a little-endian uint16, a version byte (0);
* then LevelDB-log framing in 32 KiB blocks, counted from the start of the file (the header sits
  in the first block). Each fragment has a 7-byte header: a 4-byte little-endian checksum, a
  2-byte little-endian payload length and a type byte (FULL=1, FIRST=2, MIDDLE=3, LAST=4),
  then the payload. A record that does not fit in a block is split FIRST, MIDDLE..., LAST. A
  block's tail shorter than a fragment header is zero padding.
* The checksum is the plain IEEE CRC-32 (zlib's) of the type byte followed by the payload, not
  LevelDB's masked CRC-32C.
* Each reassembled record is a serialized `wandb.proto.wandb_internal_pb2.Record`.

`read_records` yields the raw payloads, `parse_records` decodes them (needs wandb's protobuf
modules), and `RunFile` collects what tests and scripts ask about: run id, config, history rows.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B" + struct.pack("<H", 0xBEE1)
HEADER_LEN = 7
BLOCK = 32 * 1024
FRAG_HEADER = struct.Struct("<IHB")  # checksum, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    pass


def _checksum(kind: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF


def read_records(path: Path, verify: bool = True) -> Iterator[bytes]:
    """Yield every complete record's payload; a torn record at the very end is ignored."""
    data = Path(path).read_bytes()
    if len(data) < HEADER_LEN or data[:6] != HEADER:
        raise WandbFileError(f"{path}: not a W&B run file (header {data[:HEADER_LEN]!r})")
    pos = HEADER_LEN
    pending: list[bytes] | None = None
    while pos < len(data):
        room = BLOCK - pos % BLOCK
        if room < FRAG_HEADER.size:
            pos += room  # zero padding at the end of a block
            continue
        if pos + FRAG_HEADER.size > len(data):
            return  # torn fragment header at the end (a crash mid-write)
        checksum, length, kind = FRAG_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += room  # preallocated / zero-filled rest of the block
            continue
        start = pos + FRAG_HEADER.size
        payload = data[start : start + length]
        if len(payload) < length:
            return  # torn payload at the end
        if verify and _checksum(kind, payload) != checksum:
            raise WandbFileError(f"{path}: checksum mismatch in the fragment at byte {pos}")
        pos = start + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = [payload]
        elif kind in (MIDDLE, LAST):
            if pending is None:
                raise WandbFileError(f"{path}: fragment type {kind} without FIRST at byte {pos}")
            pending.append(payload)
            if kind == LAST:
                yield b"".join(pending)
                pending = None
        else:
            raise WandbFileError(f"{path}: unknown fragment type {kind} at byte {pos}")


def parse_records(path: Path) -> Iterator[Any]:
    """Decoded `wandb_internal_pb2.Record` messages."""
    from wandb.proto import wandb_internal_pb2

    for payload in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _item_key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class RunFile:
    """What an offline run file says: run id, config and history rows (JSON-decoded values)."""

    run_id: str = ""
    project: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> RunFile:
        out = cls()
        for record in parse_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out.run_id = out.run_id or record.run.run_id
                out.project = out.project or record.run.project
                out._update_config(record.run.config)
            elif kind == "config":
                out._update_config(record.config)
            elif kind == "history":
                row = {_item_key(i): json.loads(i.value_json) for i in record.history.item}
                out.history.append(row)
        return out

    def _update_config(self, config: Any) -> None:
        for item in config.update:
            self.config[_item_key(item)] = json.loads(item.value_json)
        for item in config.remove:
            self.config.pop(_item_key(item), None)

    def series(self, key: str, step_key: str = "global_step") -> dict[int, Any]:
        """{step: value} of one metric, using the logged step metric."""
        return {int(row[step_key]): row[key] for row in self.history if key in row}


def find_run_files(run_dir: Path) -> list[Path]:
    """All offline run files under `<run.dir>/wandb`, oldest first (a resumed run adds one)."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
