"""The offline W&B run-file reader: header, LevelDB-log framing across blocks, checksums."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from gppf_dist.logging.wandb_file import (
    BLOCK,
    FIRST,
    FULL,
    HEADER,
    LAST,
    MIDDLE,
    WandbFileError,
    read_records,
)


def _frag(kind: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
    return struct.pack("<IHB", crc, len(payload), kind) + payload


def write_log(records: list[bytes]) -> bytes:
    """A minimal writer with the same framing, to exercise every fragment type."""
    out = bytearray(HEADER + b"\x00")
    for record in records:
        rest, first = record, True
        while True:
            room = BLOCK - len(out) % BLOCK
            if room < 7:
                out += b"\x00" * room
                room = BLOCK
            chunk, rest = rest[: room - 7], rest[room - 7 :]
            if first and not rest:
                kind = FULL
            elif first:
                kind = FIRST
            elif rest:
                kind = MIDDLE
            else:
                kind = LAST
            out += _frag(kind, chunk)
            first = False
            if not rest:
                break
    return bytes(out)


def test_round_trip_across_blocks(tmp_path: Path) -> None:
    records = [b"a" * 10, bytes(range(256)) * 300, b"", b"z" * (BLOCK - 30), b"tail"]
    path = tmp_path / "run-x.wandb"
    path.write_bytes(write_log(records))
    assert len(path.read_bytes()) > 3 * BLOCK
    assert list(read_records(path)) == records


def test_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    data = bytearray(write_log([b"hello world"]))
    data[-1] ^= 0xFF
    path = tmp_path / "run-x.wandb"
    path.write_bytes(bytes(data))
    with pytest.raises(WandbFileError, match="checksum"):
        list(read_records(path))
    assert list(read_records(path, verify=False))[0][:-1] == b"hello worl"


def test_torn_tail_is_ignored_and_bad_header_rejected(tmp_path: Path) -> None:
    path = tmp_path / "run-x.wandb"
    path.write_bytes(write_log([b"one", b"two" * 50])[:-20])
    assert list(read_records(path)) == [b"one"]
    path.write_bytes(b"not a wandb file")
    with pytest.raises(WandbFileError, match="not a W&B run file"):
        list(read_records(path))
