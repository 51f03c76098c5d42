"""Face identities in insightface's RecordIO pair `train.rec` + `train.idx` (MS1M, Glint360K).

Record 0 of insightface's files is a header record (flag > 0, no image) whose label is
`(first identity record, end of identity records)`: images are records 1 .. label[0]-1 and the
records after them list each identity's image range, which the converter does not need. A file
without it (record 0 an image, or no record 0) is all images. An image's identity is its label
(the first label value when there are several).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from gppf_dist.data.convert.layouts.base import Converted, ItemError, Members, image_sample
from gppf_dist.data.convert.recordio import read_header, read_index, read_payload, unpack_image


def rec_files(src: Path, split: str) -> tuple[Path, Path]:
    """The `.rec` and `.idx` of `--src` (a folder holding `<split>.rec`, or the `.rec` itself)."""
    rec = src if src.is_file() else src / f"{split}.rec"
    idx = rec.with_suffix(".idx")
    for path in (rec, idx):
        if not path.is_file():
            raise ValueError(f"convert face-rec: --src {src}: {path} does not exist")
    return rec, idx


def _image_ids(rec: Path, f: BinaryIO, offsets: dict[int, int]) -> list[int]:
    """Record ids of the images, in id order (the header record's range when there is one)."""
    if 0 in offsets:
        where = f"{rec} record 0"
        head = unpack_image(read_payload(f, offsets[0], where), where)
        if len(head.labels) >= 2 and not head.image:
            end = int(head.labels[0])
            return [i for i in range(1, end) if i in offsets]
    return sorted(offsets)


class _RecordLoader:
    """Loads `(offset, identity)` items, one open file per process."""

    def __init__(self, rec: Path) -> None:
        self.rec = rec
        self._file: BinaryIO | None = None
        self._pid = -1

    def __call__(self, item: tuple[int, int]) -> Members:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open(self.rec, "rb"), os.getpid()  # noqa: SIM115 - kept
        where = f"{self.rec} record at byte {item[0]}"
        try:
            record = unpack_image(read_payload(self._file, item[0], where), where)
        except ValueError as exc:
            raise ItemError("bad_record", str(exc)) from None
        return image_sample(record.image, {"identity": item[1]})


def read_face_rec(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """insightface RecordIO: one sample per image record, identity = its label."""
    rec, idx = rec_files(src, split)
    offsets = dict(read_index(idx))
    items: list[tuple[int, int]] = []
    skipped: dict[str, int] = {}
    with open(rec, "rb") as f:
        for rid in _image_ids(rec, f, offsets):
            head = read_header(f, offsets[rid], f"{rec} record {rid}")
            label = head.labels[0]
            if label != int(label) or label < 0:
                skipped["bad_label"] = skipped.get("bad_label", 0) + 1
                continue
            items.append((offsets[rid], int(label)))
    space = {"num_identities": max((i for _, i in items), default=-1) + 1}
    return Converted("face", "insightface", space, items, _RecordLoader(rec), skipped)
