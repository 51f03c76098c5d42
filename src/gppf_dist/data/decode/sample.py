"""Safe shard reading and sample decoding.

We read tars ourselves instead of using webdataset's decoders: only whitelisted members (image,
mask, JSON, class id, text) are ever read, never pickle/torch members, and member names that are
absolute or contain `..` make their sample unusable. Problems never raise out of this module's
readers: they become a skip reason that the loaders count (`SkipCounter`) and warn about at a
limited rate.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from gppf_dist.data.decode.gpu import gpu_decoder
from gppf_dist.data.decode.jpeg import FULL, check_decoder, decode_jpeg, default_decoder, jpeg_size
from gppf_dist.tasks.base import Sample

log = logging.getLogger(__name__)

ALLOWED_EXTS = frozenset({"jpg", "jpeg", "png", "json", "cls", "txt"})
"""Members ever read from a shard; anything else is ignored unread."""

MEMBER_NAME = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


class SampleError(Exception):
    """A sample that must be skipped; `reason` is the counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class RawSample:
    """A sample's undecoded members; `error` is set if reading already disqualified it."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    error: SampleError | None = None


@dataclass
class ShardContents:
    """The samples read from one tar; `error` is set if the tar could not be read to its end."""

    samples: list[RawSample]
    error: SampleError | None = None


def _unsafe(name: str) -> bool:
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or "\\" in name


def read_shard(path: Path, byte_range: tuple[int, int] | None = None) -> ShardContents:
    """Read the whitelisted members of a tar, grouping contiguous members by key; with
    `byte_range` (from the manifest's sample offsets) only the samples in that part."""
    samples: list[RawSample] = []
    current: RawSample | None = None
    try:
        fileobj = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        return ShardContents(samples, SampleError("shard_read", f"cannot open {path}: {exc}"))
    start, stop = byte_range or (0, None)
    try:
        fileobj.seek(start)
        with fileobj, tarfile.open(fileobj=fileobj, mode="r|") as tar:
            end = 0  # where the data of the last member seen ends (padded to blocks)
            for member in tar:
                if stop is not None and start + member.offset >= stop:
                    break  # the next sample's header: the range is read
                end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                match = MEMBER_NAME.match(member.name)
                if match is None:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if current is None or current.key != key:
                    current = RawSample(key)
                    samples.append(current)
                if _unsafe(member.name):
                    current.error = SampleError(
                        "unsafe_path", f"{path}: member {member.name!r} has an unsafe path"
                    )
                    continue
                if not member.isfile() or ext not in ALLOWED_EXTS:
                    continue
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
                if len(data) != member.size:  # a stream read does not notice a cut-off tar
                    raise tarfile.ReadError(
                        f"unexpected end of data in member {member.name!r} "
                        f"({len(data)} of {member.size} bytes)"
                    )
                current.members[ext] = data
            # tarfile ends quietly at a cut-off header; a whole tar has its zero end blocks.
            if stop is None:
                fileobj.seek(end)
                if fileobj.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
                    raise tarfile.ReadError(f"no end-of-archive marker after offset {end}")
            elif start + end < stop:
                raise tarfile.ReadError(f"samples end at byte {start + end}, before {stop}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        # The sample being read when the tar broke may be incomplete: drop it.
        if samples and isinstance(exc, tarfile.ReadError | EOFError):
            samples.pop()
        return ShardContents(samples, SampleError("truncated_shard", f"{path}: {exc}"))
    return ShardContents(samples)


def _decode_image(data: bytes, key: str, ext: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise SampleError("decode", f"sample {key!r}: cannot decode {ext}: {exc}") from exc
    return img


Reduction = Callable[[dict[str, Any], int, int], int]
"""(annotation, source width, source height) -> the scale, in eighths, a sample's JPEG may be
decoded at (8: full size; see `data.jpeg`)."""


def _decode_rgb(
    data: bytes, key: str, ann: dict[str, Any], decoder: str, reduce: Reduction | None
) -> tuple[np.ndarray, int, tuple[int, int], str]:
    """(image, its scale in eighths, source (width, height), decoder) of an image member."""
    size = jpeg_size(data) if decoder != "pillow" else None
    if size is not None and decoder == "gpu":
        gpu = gpu_decoder()  # unavailable: a configuration error, refused before workers start
        try:
            return gpu.decode(data), FULL, size, "gpu"
        except (RuntimeError, ValueError):  # what the backends raise for data they cannot take
            size = None
    if size is not None:
        eighths = reduce(ann, *size) if reduce is not None else FULL
        decoded = decode_jpeg(data, size, eighths)
        if decoded is None and eighths != FULL:
            decoded = decode_jpeg(data, size)
        if decoded is not None:
            return decoded[0], decoded[1], size, "turbo"
    img = _decode_image(data, key, "jpg")  # not a JPEG libjpeg-turbo takes: Pillow, full size
    if img.mode != "RGB":
        img = img.convert("RGB")
    image = np.array(img)  # writable: task types may augment in place
    return image, FULL, (image.shape[1], image.shape[0]), "pillow"


def decode_sample(
    raw: RawSample,
    *,
    needs_mask: bool = False,
    decoder: str | None = None,
    reduce: Reduction | None = None,
) -> Sample:
    """Decode a raw sample into a `Sample`; raises SampleError(reason) if it must be skipped.

    `decoder` (see `data.jpeg.DECODERS`; default `data.jpeg.default_decoder()`): `turbo`
    decodes JPEGs with libjpeg-turbo, at the scale `reduce(ann, width, height)` when given (the
    image is then smaller than the source, see `Sample.scale_eighths`), and anything else with
    Pillow; `pillow` decodes everything with Pillow at full size; `gpu` decodes JPEGs on a CUDA
    device at full size (`data.gpu_decode`)."""
    if raw.error is not None:
        raise raw.error
    key, m = raw.key, raw.members
    image_bytes = m.get("jpg", m.get("jpeg"))
    if image_bytes is None:
        raise SampleError("missing_member", f"sample {key!r}: no jpg member (has {sorted(m)})")
    if "json" not in m:
        raise SampleError("missing_member", f"sample {key!r}: no json member (has {sorted(m)})")
    if needs_mask and "png" not in m:
        raise SampleError("missing_member", f"sample {key!r}: no png mask member")
    try:
        ann: Any = json.loads(m["json"])
    except (ValueError, UnicodeDecodeError) as exc:
        raise SampleError("decode", f"sample {key!r}: json member is not valid JSON") from exc
    if not isinstance(ann, dict):
        raise SampleError("annotation", f"sample {key!r}: json must be an object, got {ann!r:.80}")
    if "cls" in m and "label" not in ann:
        try:
            ann["label"] = int(m["cls"].decode("ascii").strip())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SampleError("decode", f"sample {key!r}: cls {m['cls']!r:.40} not an int") from exc
    image, eighths, (width, height), decoded_by = _decode_rgb(
        image_bytes, key, ann, check_decoder(decoder) if decoder else default_decoder(), reduce
    )
    if ann.get("width", width) != width or ann.get("height", height) != height:
        raise SampleError(
            "annotation",
            f"sample {key!r}: json width/height {ann.get('width')}x{ann.get('height')} "
            f"!= image {width}x{height}",
        )
    mask = None
    if "png" in m:
        mimg = _decode_image(m["png"], key, "png")
        if mimg.mode not in ("L", "P"):
            raise SampleError(
                "decode", f"sample {key!r}: png mask mode must be L or P, got {mimg.mode!r}"
            )
        mask = np.array(mimg, dtype=np.uint8)
        if mask.shape != (height, width):
            raise SampleError(
                "annotation",
                f"sample {key!r}: mask shape {mask.shape} != image {(height, width)}",
            )
    return Sample(
        key=key,
        image=image,
        ann=ann,
        mask=mask,
        scale_eighths=eighths,
        source_size=(width, height) if eighths != FULL else None,
        decoded_by=decoded_by,
    )


class SkipCounter:
    """Counts skipped samples by reason and warns at most once per reason per `interval_s`.

    `dropped` counts, apart, the targets (boxes, keypoints) that a sample's geometry made
    degenerate: the sample was kept, so they are no skip reason and never in `counts`."""

    def __init__(self, task: str, interval_s: float = 30.0) -> None:
        self.task = task
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self._last_warn: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def add(self, counts: dict[str, int]) -> None:
        """Add counts recorded (and already warned about) elsewhere, e.g. in a worker process."""
        for reason, n in counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n

    def drop(self, dropped: dict[str, int]) -> None:
        """Count targets dropped from a kept sample, by kind (see `Sample.dropped`)."""
        for kind, n in dropped.items():
            self.dropped[kind] = self.dropped.get(kind, 0) + n

    def record(self, reason: str, message: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        self._unreported[reason] = self._unreported.get(reason, 0) + n
        now = time.monotonic()
        last = self._last_warn.get(reason)
        if last is None or now - last >= self.interval_s:
            log.warning(
                "task %s: skipped %d sample(s) [%s] (total %d): %s",
                self.task,
                self._unreported[reason],
                reason,
                self.counts[reason],
                message,
            )
            self._last_warn[reason] = now
            self._unreported[reason] = 0
