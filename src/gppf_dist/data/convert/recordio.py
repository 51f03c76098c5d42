"""MXNet's RecordIO files as insightface ships face datasets (MS1M, Glint360K): `train.rec`
plus `train.idx`.

A record is `uint32 magic (0xced7230a)`, `uint32 lrecord` (continuation flag in the upper 3
bits, payload length in the lower 29), the payload, then zero padding to a multiple of 4 bytes.
A payload the writer found the magic word in is split into parts (flag 1 = first, 2 = middle,
3 = last) and read back joined with the magic word between them. An image record's payload
starts with the 24-byte header `<IfQQ` (flag, label, id, id2); when flag > 0 the label is the
`flag` float32 values after the header instead; the JPEG bytes follow. `train.idx` lists
`<record id>\t<byte offset>` per line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = 0xCED7230A
LENGTH_BITS = 29
_RECORD = struct.Struct("<II")
_HEADER = struct.Struct("<IfQQ")


@dataclass(frozen=True)
class ImageRecord:
    labels: tuple[float, ...]
    """The header's label, or its `flag` label values when flag > 0."""
    id: int
    id2: int
    image: bytes


def read_index(path: Path) -> list[tuple[int, int]]:
    """`(record id, byte offset)` per line of an `.idx` file, in file order; ValueError naming
    the file and line if a line is not two integers."""
    out = []
    with open(path, encoding="ascii", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ValueError(f"{path}:{n}: expected `<record id>\\t<offset>`, got {line!r:.60}")
            out.append((int(parts[0]), int(parts[1])))
    return out


def read_payload(f: BinaryIO, offset: int, where: str) -> bytes:
    """The payload of the record at `offset` (parts joined); ValueError naming `where` (the file
    and record) if the bytes there are not a record."""
    f.seek(offset)
    parts: list[bytes] = []
    while True:
        head = f.read(_RECORD.size)
        if len(head) < _RECORD.size:
            raise ValueError(f"{where}: truncated record header at byte {f.tell() - len(head)}")
        magic, lrecord = _RECORD.unpack(head)
        if magic != MAGIC:
            raise ValueError(f"{where}: no RecordIO magic at byte {f.tell() - 8} ({magic:#010x})")
        cflag, length = lrecord >> LENGTH_BITS, lrecord & ((1 << LENGTH_BITS) - 1)
        expected = (0, 1) if not parts else (2, 3)
        if cflag not in expected:
            raise ValueError(f"{where}: part flag {cflag} where {expected} was expected")
        data = f.read(length)
        if len(data) < length:
            raise ValueError(f"{where}: record of {length} bytes cut at {len(data)}")
        f.seek(-length % 4, 1)  # padding to 4 bytes
        parts.append(data)
        if cflag in (0, 3):
            return struct.pack("<I", MAGIC).join(parts)


def unpack_image(payload: bytes, where: str) -> ImageRecord:
    """The image header and bytes of a payload; ValueError naming `where` if it is too short."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"{where}: {len(payload)} bytes, shorter than the image header")
    flag, label, rec_id, rec_id2 = _HEADER.unpack_from(payload)
    start = _HEADER.size
    labels: tuple[float, ...] = (label,)
    if flag > 0:
        end = start + 4 * flag
        if len(payload) < end:
            raise ValueError(f"{where}: header says {flag} labels, the record is too short")
        labels = struct.unpack_from(f"<{flag}f", payload, start)
        start = end
    return ImageRecord(labels, rec_id, rec_id2, payload[start:])


def read_header(f: BinaryIO, offset: int, where: str) -> ImageRecord:
    """Only the image header of the record at `offset` (`image` empty): a cheap listing pass."""
    f.seek(offset)
    head = f.read(_RECORD.size + _HEADER.size)
    if len(head) == _RECORD.size + _HEADER.size:
        magic, lrecord = _RECORD.unpack_from(head)
        flag = _HEADER.unpack_from(head, _RECORD.size)[0]
        if magic == MAGIC and lrecord >> LENGTH_BITS == 0 and flag <= 16:
            extra = f.read(4 * flag)
            return unpack_image(head[_RECORD.size :] + extra, where)
    return unpack_image(read_payload(f, offset, where), where)
